"""The audit log: sign-ins, keys, administrators' changes and force-unloads."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "audit_log" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "at" TIMESTAMP NOT NULL,
    "actor_name" VARCHAR(64),
    "action" VARCHAR(32) NOT NULL,
    "target" VARCHAR(200),
    "client" VARCHAR(64),
    "detail" JSON,
    "actor_id" INT REFERENCES "users" ("id") ON DELETE SET NULL
) /* Who did what to accounts and workers: sign-ins (failed ones too), keys, an */;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "audit_log";"""


MODELS_STATE = (
    "eJztnWtv2zYXx78K4TdLASdI3STNUwwDnNRdvSVxkTjbsAsUWmJsIjKpkVTTYE+++w51se"
    "6O5NqerOpVY4qHkn6kDvk/R2L/6cy5RWx50Hfoz+Sp8w7902F4TuCP1JEu6mDHicp1gcIT"
    "26uKHWo8kCevEE+kEthUUH6PbUmgyCLSFNRRlDNdu89Q/9MQgQG6u7Pt+YPxPbV+ML6XxB"
    "RE/XB39w5RJRG1EJXIcSc2NbuIM/sJqRlBjzNuE238nUQ3H/v7veMTXU8qLoh1oK/A4iZc"
    "AmXTbZzMZfRvlxiKTwkYCDjlH39BMWUW+UJk+NN5MO4psa0EYGrpBrxyQz05Xtn5DIsPXk"
    "19IxPD5LY7Z1Ft50nNOFtUh/vUpVPCiMCKWDHozLXtoH/CIv9aoUAJlywu0ooKLHKPXVt3"
    "nbb2ryAq6xjG1Whs3AzGhtHJdGtoEYMfFJmc6SFBmZLe/c/xF8MmbKpm8PP1ybN/noiDX0"
    "uf8Jf+9fnH/vXe65NX+oQcxpU/4K6CIz3v0LPXBFbYb8SjHmH2/q0AOqy/HtRhQcQ6eiq2"
    "D/vwsAztw8Ni3PqY5h3x9Z8kY4blrArmlFkDaZ8clYB9clTIWh9KogZiGoaBVZb0ezii6J"
    "zk005apmBbgelB+McuoocbtEbgtwNvtgT9eHg5uBn3Lz/p082l/Nv2+PXHA32k55U+pUr3"
    "0h5o0Qj6dTj+iPRP9PvoauDh5VJNhXfGqN74946+JuwqbjD+aGAr5njD0pBaotdtLJXhyp"
    "X6PW27hp4PLrkuHb8jHR0yWdrTgnzmDyv1c9Ky7eU69zI8jsLIW/wNmcrv3ZhFqmuBzy46"
    "66m+iP3e66O3R6dvTo5OoYp3oYuSt0s6fHg1hnlRL6vvH3JXfBpXlu4HWLPTKQMx40Eewh"
    "VhZuYt9QLlcxs0s2Nwn8PRE5ZGT7PAjwsdEh9UcO9wx0T5S7b+zXn//aDjEZ5g8+ERC8tI"
    "oNZHeI+nShZ1s4fmvXm6BDM89eDou9DXHOpN16JqwJTIV6PR0e5SRarrGTaflpOkv844sk"
    "ADPs6wQoojbJrcBZ4IMyjk4oEI+Q5JGD77lEm0d4+pTSzQiURCdf6qqzWi7EL1jABdX9N/"
    "MmzNKaP6ZkCAgiQ1Z5hNCRy858Ik+y6zObbkAboin4lAGDlYSjgFtKZ/QTubkKyFXqusww"
    "oGZ30F6xq8VXeJQK0+27er+HpN+2VW8eB/uDCqBiOSViuJ5Jqt5DatkYGYvqJqjAOLBgYh"
    "3vRKAH7TKwSsDyUBKyxg4qgCOLJo3gDulQqp9ZaE1HrZkJppU8IqIY4smod4/T7CIgpWWV"
    "m+P92MrvL5RhbpWZeaCv0f2bAq2z3OS7hqFImZNeS5d9n/LY36/GJ0lp4ydQNnWd/MK0rf"
    "uMlK2rdmyDcsfT1c29O+NYNbVvrGB1VC+8IFoKvbi4v/SvyCg1edHNnrlXeXCV6Qgqps/h"
    "UBIBCIEusST4fqFKgkSgFckI93d9S6u0Nz/IQmBEQml4ShiZ8R9ScatKf/trCcTTjcNHIl"
    "qNXb2+F7+SonBbv587VZ2HpMscUiV1FlV1I+C4PmLWg2s2Zsc4PfYFTBdawVez1p2fZ6XX"
    "o9J4UUXH1qVVDFmS4MGuhMj4/LONPj42Jnqo8lnakgcKdSPx4W+UzNShNXnm3zsJ+WgH5a"
    "iPw0DVwvnwmrtBSLmTQP77pei4u9pvUEY3JuOILPnZzJYky+FCjwjOH2oqSdzoZgL5sLBr"
    "+Nlwc+FlPBxejqx7B6OhqSipmSuaPpuCLHlXywOS5gn7JLkb/Xhptif3jwdvvw349uzy4G"
    "6NP14Hx4MwwiUIuZ1zuoi6CA+oL9etC/SLPmjuFUoxxabJfv/453E7B2VIw8gtoG/ysrxP"
    "Kyhtt7m6V3fLIpx72W9HCElz+yqu8HxU3aIOmLQVIPVxskfSFIGh9UiSDpNciX6+H5eFmQ"
    "NOYtiJR4SnL8xFlg+eHna2LjghxsgPrSb2UHZWgR7udNxpFDXDmh5BjJ4mhyvNNeDiiPGE"
    "GBxQHqS0n1g6OQII5NiUQmFsIP5npn6iJfF3XBBtCZ/ptQGIGRcmU2fLz21tv3n+r1/pPg"
    "1SLDYf0Gvq2xftmnQNdVUXth/UbA3bbMa2PwxeN8N6OxZWLw/tRSxYNFFluMpZh87nhLuB"
    "31ZESIvFcbil3ZwqAJ4cFtu7I2xbDpFIPLGFyCUe1d1aRV81C3aYUd88p+WqB6LDBj18at"
    "sqHAYMqmmktVwLm2LeQsZL2gBkRQW8hgQBo5oJflD4paWDGfUDPgG8/XKGwbHsOK2FOGLe"
    "1StLUvMBwiKtNOGra0S9C2BHcckPXFQfBC/51n2rrvnDlyhlVutmzJxzKRSSPCXJt4l3dJ"
    "+syc5cW3KmfPwnfadwx22fRZbJDV6fN6L2eZkxYKc5nFOSG9X0D5Hd6Cz9wPkG5YIiwIsq"
    "jUbVldxLzv030m8FNynb+hAnkfMaAHQhyEGfISkLk7uq218TYdVK900H+7X1sDP8qIifVg"
    "P4jKm7VlDBs4b24mylf73OZit5ydC+6FLj/L94wDRswKFtYxsxTmCdhtivOiZLsq5mw0uk"
    "gkB86G6ej/7eXZ4Hrv9aukmslZabfZzW8ku5lZ/Jd50Su+CfDqL3pF2w3v2BAofM8rLVa/"
    "ElBJ2VQz1V+KjiRSQrtfCUhrghu/pSYNo02LwhBZgTaMES2WiPEOLPMdut71jFj7lKHA8l"
    "209bYXbyy5x/dXNNSqv3qpPz97UlWfJK1aJfiiEmzXct/KWi6zk7Qk8KisuJN0zLaBPb8j"
    "PR0yWdrV5ItDobkVOjpp2XZzrbu53Uu63Uu6Bsmuuu4lTQQ1Z528faT9I92le0hHdV7SMs"
    "VAW31RL32h9yGruD9szKRNe5RLe+iHqgLhoHoD6W7kf1yCM6rc/WGL9y+NmXzVBqZ1o70E"
    "7tp2MK0QDV//ZPb8L+58ylc="
)
