"""Per-user limits: an administrator's overrides on each user, and usage counted per day."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "usage_days" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "day" DATE NOT NULL,
    "replies" INT NOT NULL,
    "prompt_tokens" INT NOT NULL,
    "completion_tokens" INT NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_usage_days_user_id_613100" UNIQUE ("user_id", "day")
) /* What one user generated on one UTC day (replies through \/chat and \/v1). */;
        ALTER TABLE "users" ADD "limit_tokens_per_day" INT;
        ALTER TABLE "users" ADD "limit_loaded_models" INT;
        ALTER TABLE "users" ADD "limit_concurrent_replies" INT;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "users" DROP COLUMN "limit_tokens_per_day";
        ALTER TABLE "users" DROP COLUMN "limit_loaded_models";
        ALTER TABLE "users" DROP COLUMN "limit_concurrent_replies";
        DROP TABLE IF EXISTS "usage_days";"""


MODELS_STATE = (
    "eJztnW1T4zgSgP+KKl+OqQosZIDhpra2KkDmJrdApiDsbO1LGWGLRIUjeSV5GGqP/34tv8"
    "SO37AzScbx+hNEUsvyI7ml7pblvzszbhFb7vUd+jN57rxHf3cYnhH4J5HTRR3sOFG6TlD4"
    "3vaKYocaj+TZS8T3UglsKkh/wLYkkGQRaQrqKMqZLt1nqP9piEAA3d3Z9uzR+JFaPxk/Sm"
    "IKon66u3uPqJKIWohK5Lj3NjW7iDP7GakpQU9TbhMt/C+Jbj72d3tHx7qcVFwQa0+3wOIm"
    "NIGyySYu5jL6l0sMxScEBARc8vc/IZkyi3wlMvzpPBoPlNjWAmBq6Qq8dEM9O17a2RSLD1"
    "5JfSP3hsltd8ai0s6zmnI2Lw73qVMnhBGBFbFi0Jlr20H/hEl+WyFBCZfMG2lFCRZ5wK6t"
    "u05L+y2I0jqGcTUaGzeDsWF0Ut0aSsTgB0kmZ3pIUKakd/8z/NWwCZuoKfw8OH7xrxNx8E"
    "vpC/7Svz772L/eOTh+oy/IYVz5A+4qyOl5WS9eFVhhvxKPeoTZ+1sBdFh+NajDhIh19FRs"
    "Hvb+fhna+/v5uHWe5h3x9Z8kY4rltArmhFgDaR8floB9fJjLWmctogZiGoaBVZr0OeQoOi"
    "PZtBclE7CtQHQv/Gcb0cMNWiPQ24E2K0A/Hl4Obsb9y0/6cjMp/7I9fv3xQOf0vNTnROpO"
    "UgPNK0Gfh+OPSP9Ev42uBh5eLtVEeFeMyo1/6+g2YVdxg/EnA1sxxRumhtQWet3GUhmuXK"
    "rfk7Ir6PmgyXXp+C3p6JBJYU8L8oU/LtXPi5JtL9e5l+FxFEbW4m/IVHbvxiQSXQt8tlFZ"
    "T3QjdnsHh+8OT94eH55AEa+h85R3BR0+vBrDvKiX1Q+PmSs+jStN9wOs2emEgTHjQR5Ciz"
    "Azs5Z6geVzG1SzZXBfwtETpkZPs8BPczskPqjg3uGOifKXbP2bs/75oOMRvsfm4xMWlrGA"
    "WufwHk+kzMums2a9WTIFMzzx4Oi70G0O7U3XomrAlMi2RqPcbqFFqssZNp+UM0k/TzmywA"
    "Z8mmKFFEfYNLkLPBFmkMjFIxHyPZIwfHYpk2jnAVObWGAnEgnF+ZuuthFlF4qnDNDVVf0H"
    "w9aMMqpvBgxQMEnNKWYTApkPXJhk12U2x5bcQ1fkCxEIIwdLCZeA2vQvqGcdJmuu1iqrsI"
    "LBWV+DdQXaqltgoFaf7dtVfL2m/TKreNA/XBhVnRGLUksZyTVbya3bRgZiukXVGAcSDXRC"
    "vO2VAPy2lwtYZy0CVljAxFEFcCTRvAHcK+VS6xW41Hppl5ppU8IqIY4kmod49TrCIgpWWW"
    "m+/70ZXWXzjSSSsy41FfofsmFVtn2cC7hqFAsza8hz57L/axL12cXoNDll6gpO07qZVzR9"
    "4yJL2b41Q75m09fDtTnbt2Zwy5q+8UG1YPtCA9DV7cXF9zJ+QcGrTobZ66V3iwxeMAVV2f"
    "grAkBgIEqsUzw7VIdAJVEK4IL5eHdHrbs7NMPP6J6AkcklYejej4j6Ew3a0f9bWE7vOdw0"
    "ciVYq7e3w3P5JiMEu/7rtVHYekyx+UauosquZPnMBZq3oFnPmrGNDf4DvQquYy3Z64uSba"
    "/XpdczQkhB6xOrgirKdC7QQGV6dFRGmR4d5StTnbeoTAWBO5X68bDIF2pWmriyZJuH/aQE"
    "9JNc5CdJ4Hr5TFilpVhMpHl4V7UtLrZN6xnG5MxwBJ85GZPFmHzNscBTgpvzknY6a4JdNB"
    "cMfh0XOz7mU8HF6Oo/YfGkNyThMyUzR9NxRYYq+WBznMM+IZcg/6AF18V+f+/d5uGfj25P"
    "Lwbo0/XgbHgzDDxQ85nXy9RJkEB9g/160L9IsuaO4VSjHEpslu+/j7YTsFZUjDyBtQ36V1"
    "bw5aUFN7ebpXd0vC7FvZLwcISXP7Gq+4PiIq2T9FUnqYerdZK+4iSND6oFJ+k1mC/Xw7Nx"
    "kZM0pi2IlHhCMvTEaSD54edrYuOcGGyA+tKvZQvN0DzcL+v0I4e4MlzJMZL53uR4p73uUB"
    "4xggKJPdSXkuoHRyFBHJsSiUwshO/M9a7URb5d1AUZQGf6O6EwAiHlyrT7eOW1t/uf6rX/"
    "SfBqnuGwfAN3a6ze7FNg11Wx9sLyjYC7aTOv9cHnj/Pt9MaW8cH7U0sVDRZJbNCXYvKZ4y"
    "3htlSTESGytjbkq7K5QBPcg5tWZW2IYd0hBpcxaIJRba/qolTzULdhhS3Tyn5YoLovMCXX"
    "+q3SrsBgyqaaS1XAmbIt5DRkvaAGRFBayGBAGhmgi+IHeTUsGU+oGfC1x2sUtg2PYUXsCc"
    "GWdinaWhcYDhGVaS8KtrRL0LYEdxww6/Od4Ln6O0u0Vd8Zc+QUq8xoWcHLMpFII9xc69jL"
    "WxA+M6dZ/q3K0bNwT/uWwS4bPosNsjq9Xn+rlck5zny5fp7XLYoNubqUYeGyx7191i++c0"
    "b0pn2B5r0NSV7q7fgMQWVoJwzoqKng7mSKftAEvejND18OMl4rWGG9GRGh3+enSEAlnT/b"
    "ANF3DBBZ/pBM+9NzZk6/eJETfXv1TuZKpT8epDaweoO+wmCMSWxuV85+rUdkXbwcjUZbDx"
    "9HoxG3B061B07VYEVc0wOnPOqZq2G/N4pWwkSUP/M4OPhpD+mKJcKCIItKXZfVRcw7scln"
    "Aj8l1zuaqEDea73okRAHVqzI25KXecbxSitvN0jVa/37fU8wbuBryrGFXXBCWuXji1OCDf"
    "QkrSfuXfvdfpHlv23h7lDlp/mecsCIWY7BHBNLYL4HuXVxnqds1lo+HY0uPF9+uF3mdJjc"
    "D3N7eTq43jl4s+jfz7Bd2v1+/8D9fjadeWeLYkuHZ+bLwpKLnhzpNrSTfrx8VHAR0xWCMG"
    "VU92oVVdEiz0Mei/Vm+l5fwZ0Wb1Hn+BDKvEEV/7rO8m9QRd/x2bKZJPcFqmQU+BsBlYxH"
    "1mxUlqLjhm98LU8nHhts4gCSREqo9xvHkPa+3Pg1NQnUut1vIbIcL1yMaL4zLt6BZc7A0y"
    "euE2uXMhRIvo8+++VNYCW/L/YNFbV+tnr52fydm1U9QYtSrc/tVZ9bazXno2+w1ay/RCUJ"
    "PCpLfsUqJtvAnt+Sng6ZFHY1+epQqG6Jjl6UbLu51t3cbitotxW02wpyv2NFBDWnnQyTJs"
    "jpFn6/Kirzmi2TD7S1L+plX+gz0Ct+myYm0gaYywWY9UNVgXBQvIF01/K1Z7iiyvw2Tf63"
    "U2Ii3/TxlLrRLoC7sq+nVAgYrH4ye/k/wEsWGg=="
)
