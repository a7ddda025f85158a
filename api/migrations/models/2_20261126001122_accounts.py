"""Accounts: users, sessions, API keys, and each chat's owner (aerich's SQLite foreign-key DDL fixed by hand)."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "users" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "password_hash" VARCHAR(255) NOT NULL,
    "role" VARCHAR(8) NOT NULL,
    "disabled" INT NOT NULL,
    "created_at" TIMESTAMP NOT NULL
) /* An account. Users are disabled, never deleted, so their chats keep an owner. */;
        CREATE TABLE IF NOT EXISTS "api_keys" (
    "id" VARCHAR(16) NOT NULL PRIMARY KEY,
    "name" VARCHAR(100) NOT NULL,
    "secret_hash" VARCHAR(64) NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "last_used_at" TIMESTAMP,
    "revoked_at" TIMESTAMP,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
) /* An API key ``llmk_<id>_<secret>``: its id is public, only the whole key's SHA-256 is stored. */;
        CREATE TABLE IF NOT EXISTS "sessions" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "token_hash" VARCHAR(64) NOT NULL UNIQUE,
    "created_at" TIMESTAMP NOT NULL,
    "last_seen_at" TIMESTAMP NOT NULL,
    "expires_at" TIMESTAMP NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
) /* A signed-in session: only the token's SHA-256 is stored. */;
        ALTER TABLE "chats" ADD "owner_id" INT REFERENCES "users" ("id") ON DELETE RESTRICT;
        CREATE INDEX IF NOT EXISTS "idx_chats_owner_id" ON "chats" ("owner_id");"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP INDEX IF EXISTS "idx_chats_owner_id";
        UPDATE "chats" SET "owner_id" = NULL;
        DROP TABLE IF EXISTS "sessions";
        DROP TABLE IF EXISTS "api_keys";
        DROP TABLE IF EXISTS "users";"""
# SQLite cannot drop a column that has a foreign key: a downgrade leaves "owner_id" empty.


MODELS_STATE = (
    "eJztnFtv2zYUgP8K4ZclQBokXm4rigJ24qxek7hwnK3oMCi0xNhEZFIl6SRGl/8+kpKsuy"
    "u5tierekp8xENJ35EOz0XSt8aEWsjm+y0Hf0SzxlvwrUHgBMl/Ylv2QAM6TiBXAgGHth4K"
    "HWw8opkWwiEXDJpCyh+gzZEUWYibDDsCU6JGtwhofeoCqQDu72178mi8w9Z74x1HJkPi/f"
    "39W4AFB9gCmANnOrSxuQcosWdAjBF4HlMbKeVfOLj90HrTPD5R47igDFn76ggsaspDwGS0"
    "iZ1NCf46RYagIyQVmNzl3/9IMSYWekHc/+k8Gg8Y2VYEMLbUBFpuiJmjZedjyC71SHUiQ8"
    "Ok9nRCgtHOTIwpmQ+X56mkI0QQgwJZIehkatuefXyRe6xSINgUzQ/SCgQWeoBTW5lOabtH"
    "EMgahnHTGxi3nYFhNBJm9TVC8D2RSYm6JDARXJ//BL4YNiIjMZY/D09e3f0EHNxRaod/tv"
    "rnH1r9ncOTXbVDKq8r94K78bY09aZXPQUU0J1EUw8w678FQPvjV4PaFwSsg7ti87APDvLQ"
    "PjjIxq22Kd4BX/dOMsaQj4tgjqlVkPbJUQ7YJ0eZrNWmKGpJTMEwoEiSvpBbBJ6gdNpRzR"
    "hsy1Pd9//ZRvTyBK2e9NueN1uAftC97twOWtef1O4mnH+1Nb/WoKO2NLV0FpPuxD3QfBLw"
    "V3fwAaif4EvvpqPxUi5GTO8xGDf40lDHBKeCGoQ+G9AKOV5f6lOLWN2GXBhTvpTd47orsL"
    "x3yGUx/JYY2mey0NIMPdHHpewc1aytXGYry9uRGWnBX5eIdOuGNGKmlXy20VmP1EG8aR4e"
    "nR6d/XpydCaH6AOdS04XGLx7M5DrogqrHx5TIz6FK0n3UsbseERkMqMhd+URQWKmhXpe5n"
    "PnTbNlcF/9q8eXBnczg8/zPCR8Uclzl2eMhBuytW7PWxedhiY8hObjM2SWEUGtttAmjUnm"
    "Y5ObJs1JXAIJHGk46izUMXvUZcQoGil5qJbvLcpCTTkibwoKJJ4nxDhUEgCJpbNAjoSQaP"
    "m+zBWxdX8PJnAGhgiYY8oRAUM3KTRtjIgAO+p/S4avQypPGkicHNzddS/4bkoWuv791Ylo"
    "OaL17ERUYGEXykTnCkvBLtkKHqXdzJWJNhdkos1kJlqnR9n0q5seTR1rSatHNWurl8XqKV"
    "G0d/SxqKCIM50rVNCZHh/ncabHx9nOVG17jeWi8ky5uj0s9ITNQgtXmm71sJ/lgH6Wifws"
    "DlyFz4gUCsVCKtXDu6rOQKhSPZPX5MRwGJ04KYvFAL1k5N8Jxc1VqxuNNcFetBZ0Pg8iy4"
    "APdee69Xk3shRc9W5+94eHjHB+1WvH4EuAjqIzZSmu5NKmMIN9TC9G/kEprov9wf7p5uFf"
    "9O7aVx3wqd857952ezfRlVdvVCIpwG6+3u+0ruKsqWM4xSj7Gpvl+9vxdgJWjoqgZ5ltS/"
    "/LC1TykoqbK+g1j0/W5bhXUM8L46XPpGiJNKyyFNKyrYXrLZFqXJurkZYMbt4SafiiitRI"
    "+zJ96XfPB4uKpCFvgTiHI5TiJ9qe5uXHPrJ1bTAb9bU7yxamoVm4X9dZR/ZxpZSSQySzq8"
    "lho32/oNwjCHga+6DFOVY3jgAMOTZGHJiQMbeYq/e0B9y8aE/qSHQm1xVhCKSSmPJk+Xjl"
    "s6+4WJzplfP6Y+/mK2+peCULXHZpmNFilWF/fAWfmll92idkXlck2/PHVwLuptO8ugaffZ"
    "1vZzU2Tw3eXVqKeLBAY4O1FJNOHB3CbaknQ4zRlKg925XNFapQHty0K6tbDOtuMUwJkYdg"
    "uFlP7tgnolU91HVbYcu8stsWKF4LTOjVdatkKdBbsrHiUhRwqm4NOQlZBdQSkRzNuHdBGi"
    "mgF/UPsmZYsp9QMuBr79cIaBuaYUHsMcWadi7ayhcYDmKFaUcVa9o5aFuMOo5M67OL4Jn+"
    "O021dt8pa+QYitRuWXaIF1KpRJlrHc/yLmifmeO0+lbh7pn/TPuWwc7bPgtdZGV6w0D3LF"
    "PaQn4vM7snpF6ZyP+SOzRNOiViH6iJOYAMAQtzNZe1Bwh6Qgy4TORPTlX/BjOgX2IAjwg5"
    "ABKgG5CpL7WvdPK6HVSudtD/+8p6BV/KCCXrkPNnKl1I0ffVE4oVXDfXU+UrfW9z/sLg1h"
    "X3fJef5NumEiMkGYF1SC2GeSj11sV5LtlsFtPu9a4izYF2N179v7tud/o7h7vRbCYl0q67"
    "mz9JdzMR/Od50Cv8HaTlH/QKvri0ZZdA5nNe8WT1BwHlTJtKlvXnosMR53LeHwSkcoJbd6"
    "YqXUbrTgp9ZBm5YYhodooYNmCe99A5HhFkvcEEeJpvg6+P6Xpjzs+c/cBEdfZXruzP7Z4U"
    "zU+iWnUm+N1MsI7lfpZYLvExLY7krbLkx7RCuhW0/JZY2mey0NToxcFyuiUMHdWszVxqM9"
    "ef06o/p1WCZldJP6fVQgyb40bah53dLXsLP+wcjPleLpMNtM4vypVfqO+Q4WLP3IZU6rZH"
    "vraHuqkKEPaGV5DuWj46LfcoEEkJ7P647d1kPQ06V4lHdNgU4F9gY76Nq/8CuApGJIxLvB"
    "YRfwMiFp+pCdpp0cEmF7PX/wBVb/zD"
)
