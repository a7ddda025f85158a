"""Settings administrators change at run time (open sign-up)."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "server_settings" (
    "key" VARCHAR(64) NOT NULL PRIMARY KEY,
    "value" JSON NOT NULL
) /* A setting administrators change at run time (open sign-up), as JSON under a key. */;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "server_settings";"""


MODELS_STATE = (
    "eJztXWtT4zYX/iuafCnMBApZYOlOpzMBst28BbJDQrfTyxhhi8SDI7mSDMv05b/3yJf4bm"
    "xIso7rT5AjHdl+JB/pOedI/qczZwaxxG7fNn8hT50P6J8OxXMC/yRKuqiDbTuUK4HEt5Zb"
    "Fdumdk+eXCG+FZJjXYL8DluCgMggQuemLU1GVe0+Rf3PQwQK6ObGsub32o+m8ZP2oyA6J/"
    "Knm5sPyJQCmQYyBbKdW8vUu4hR6wnJGUGPM2YRpfydQONP/Z3e4ZGqJyTjxNhVd2AwHW7B"
    "pNN1XMyh5t8O0SSbElDgcMk//gKxSQ3ylYjgp32v3ZnEMmIAm4ZqwJVr8sl2ZaczzD+6Nd"
    "WD3Go6s5w5DWvbT3LG6KI6PKeSTgklHEtiRECnjmX5/ROIvHsFgeQOWdykEQoMcocdS3Wd"
    "0vbuIJR1NO1yNNHGg4mmdVLdGmhEwPdFOqNqSJhUCvf55/irZhE6lTP4uX/07F0nxMGrpS"
    "74a//q9FP/amv/aFtdkMG48gbcpV/Sc4ue3SawxF4jLuohzO7fCkAH9ZcDdSAIsQ7fivWD"
    "vbdXBu29vXy4VZnCO8TXe5O0GRazKjAn1BqI9tFBCbCPDnKxVkVxqAExBYaGZRrpMyiR5p"
    "xkox3XTIBt+Kq7wT+bCD08oDECu+1bswLoJ8OLwXjSv/isLjcX4m/Lxa8/GaiSnit9Ski3"
    "khZo0Qj6Mpx8Quon+n10OXDhZUJOuXvFsN7k9466J+xIplH2qGEjYngDaYBarNctLKTmiF"
    "f1e1J3CT3v33JdOn5DOjrApLCnOXlg96/q57hm28t17mV4HbmWtfgbUpnduxGNRNcCPpto"
    "rKfqJnZ6+wfvD47fHR0cQxX3RheS9wUdPrycwLyoltV395krPgVXGt2PsGY3pxTIjAvyEO"
    "4IUz1rqeczn2u/mQ0D9zkYPYE0fJs5flzwkOiggmeHJybSW7L1x6f9s0HHRfgW6/ePmBta"
    "DGpVwnosIVnUTRfNe/OkBFM8dcFRT6HuOeCbjmHKAZU8m42Gpd1CRqrqaRablqOkX2YMGc"
    "ABH2dYIskQ1nXmAJ4IUxAyfk+4+IAEDJ8dkwq0dYdNixjAE4mA6my7qzii6EL1FAFdXtN/"
    "UmzMTWqqhwECCpRUn2E6JVB4x7hOdhxqMWyIXXRJHghHGNlYCLgEtKZ+QTuroKy5Vquswf"
    "IHZ30J6xKsVbeAoFaf7dtVfL2m/TKreLA/jGtVnRFxrVeR5Jqt5FbNkQExdUfVMPY1GuiE"
    "eNcrAfC7Xi7AqigOsMQcJo4qAIcazRvAvVIutV6BS62XdqnplkloJYhDjeZBvHwbYRAJq6"
    "w0vv8bjy6z8Q01krOuqUv0f2TBqmzzcC7AVUERm1kDPLcu+r8loT49H50kp0zVwEnaNrOK"
    "1Deq8iruWzPIV0x9XbjWx31rBm5Z6hsdVDHuCzeALq/Pz78V+QUDLzsZtNeVd4sIL1BBWT"
    "b+igAgIIgCK4nLQ1UIVBApAVygjzc3pnFzg+b4Cd0SIJlMEIpuvYioN9GgLfW/gcXslsFD"
    "I0cAW72+Hp6J7YwQ7Oqv10Zh6zHF5pNcaUqrEvNZKDRvQbOaNWMbG/wPehUc23hlr8c121"
    "6vS69nhJD8u0+sCqoY04VCA43p4WEZY3p4mG9MVVncmHICTyrU62GQB1OvNHFl6TYP9uMS"
    "oB/nQn6cBFwtnwmttBSLqDQP3mWlxUXStJ5gTM41m7O5nTFZTMjXHAaeUlyfl7TTWRHYRX"
    "PB4LdJseNjMRWcjy5/DqonvSEJnymZ2wodh2eYko8WwznYJ/QSyN8pxVVhv7f7fv3gn42u"
    "T84H6PPV4HQ4HvoeqMXM6xYqEQhMj7BfDfrnSayZrdnVUA401ovvD4ebCbAyVJQ8AtsG+y"
    "sq+PLSiuvLZukdHq3KcC8lPBzCyx5p1fygqErrJH3RSerC1TpJX3CSRgdVzEl6BfTlang6"
    "KXKSRqwFEQJPSYadOPE1P/5yRSycE4P1ob7wWtlAGpoH9/Mq/cgBXBmu5AiS+d7kaKe97F"
    "AeUYJ8jV3UF8JUL45EnNiWSQTSMeeeM9e9Uhd5vKgLOgCd7mVCYQRK0hFp9/HSW2/zn+qV"
    "/8RZNc9wUL+B2RrLp30SeF0VthfUbwS466Z5rQ8+f5xvpje2jA/em1qqWLBQY42+FJ3NbX"
    "cJt6GWjHCeldqQb8oWCk1wD67blLUhhlWHGBxK4Ra0armqca3mQd2GFTbMKnthgeq+wJRe"
    "67dKuwL9KdtUuFQFOFO3BTkNslpQA0RQmwt/QGoZQBfFD/JaeGU8oWaArzxeI7GluRhWhD"
    "2h2KJdCm1lCzSb8MpoxxVbtEugbXBm20Dr853gufY7S7U13xlz5AzLzGhZwWaZUKURbq5V"
    "5PIWhM/0WZZ/q3L0LMhp3zCwy4bPIoOsTtvrx4Q/ED72cu87GfGheIVuUZRIuFW1IJG/XL"
    "CoHyT+o9hu9mAzO8ISAclFalpHW8wm1Nsb79jbXYQFUtuKkANdH93RnthusPwLvCFkdO8d"
    "nlfWNvnV2x0GmVapWxBGesCWkxFHyt/Tt1B405a+mtqnle7pS00O38aWXauF0RnOPChkUV"
    "ZowRxVSzNw2aMrv6hDPBglagMSR4uRASJXej05RdAY2gqC03LGmTOdoe/VbOBGor9/2M/Y"
    "IrXEdjNM1R+LE3Ggkc5fbbD7Gwa7DZwxHajYYA4LwFnTQSwg2CwbpQJ6qWR8d9BXGIwRjf"
    "VlGO7VekTWxWPbaGjr4a9tNMTt4Xnt4Xk1YPc1PTzPRT1zNez1RtFKmPDy57f7h9jtItWw"
    "QJgTZJhCtWV0EXVPn/MwgZ+CqexMkyP3iAKg1MSGFSty04szz2tfauNtsme91r/f9jT2Bj"
    "pEIgs7/7THykexpxQb6BVfTQ5P7TOXQ+a/aak7gclP43vCAEZMcwhzRC0B8y3orQrnhWS9"
    "bPlkNDqPefROhsncvuuLk8HV1v52PFaZwV3a3OX/YO6yZc7dc5KxoULNi2VhyUVPjnYbpk"
    "6/Xh5UcBHd4ZxQqVX3ahU10UKeB3kkbyXT9/oC3Gn1FuocH0KZ3aDRL4UlZvUKu0HDb5Jt"
    "2EySuxk0mdHyRoBK5lbUbFSWQscJdq++Hp1obLCJA0gQIaDdN44h5X0Zey01CahVu98CyH"
    "K8cBFEixJrwg4slVFjTikxdkyKfM0P4ScM3Qms5LcS39BQ62erl5/Ny0Kv6gmKa7U+txd9"
    "bi1rzoe+waxZfVVPEHhVXvlFvohuA3t+Q3o6wKSwq8lX24TmXtHRcc22m2vdzW1aQZtW0K"
    "YV5H6Tj3BTn3UyKI1f0i38Fl9Y5yUukw9oyy/qxS/U9xwqfmcrotIGmMsFmNVLVQFhv3oD"
    "0V3Jl+vhijLzO1v5e0YiKu2ukU3aNfL8L6jAo7k="
)
