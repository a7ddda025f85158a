from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "chats" (
    "id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "title" VARCHAR(200),
    "created_at" TIMESTAMP NOT NULL,
    "updated_at" TIMESTAMP NOT NULL,
    "model" VARCHAR(255),
    "device" VARCHAR(8),
    "backend" VARCHAR(16),
    "system_prompt" TEXT NOT NULL,
    "temperature" REAL NOT NULL,
    "top_p" REAL NOT NULL,
    "max_new_tokens" INT NOT NULL
) /* A conversation and its settings. ``id`` may be chosen by the client (the seed's UI uses UUIDs). */;
CREATE TABLE IF NOT EXISTS "messages" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "role" VARCHAR(16) NOT NULL,
    "text" TEXT NOT NULL,
    "created_at" TIMESTAMP NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "error" TEXT,
    "model" VARCHAR(255),
    "device" VARCHAR(8),
    "backend" VARCHAR(16),
    "prompt_tokens" INT,
    "completion_tokens" INT,
    "time_to_first_token_s" REAL,
    "total_time_s" REAL,
    "tokens_per_s" REAL,
    "dropped_messages" INT,
    "chat_id" VARCHAR(64) NOT NULL REFERENCES "chats" ("id") ON DELETE CASCADE
) /* One message. Assistant replies carry the model, device, metrics and a status. */;
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" INTEGER PRIMARY KEY AUTOINCREMENT NOT NULL,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSON NOT NULL
);"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


MODELS_STATE = (
    "eJztml1z4jYUhv+KxjdNZigTaCBp7xxCunQT2ElIu7OdjiPsE/DESF5J3oTZ5r9Xkm38gc"
    "3iDNDAcBV8dI4kP1KOpFf+bkypAx6vdyZYGL+h7wbBU5A/MvYaMrDvJ1ZlEHjkaUdbemgL"
    "HnHBsK2qecQeB2lygNvM9YVLiXI1kU3JN2AcKwvCxEGu4IiDEC4Z8zp6eHCdhwc0xTM0Am"
    "RPKAeCRjMkJvLJc4EIdKR+cwDnJ47ueyjgIP/e9y75cV11wqG27IWsbUvtBcT9GoAl6Bik"
    "I5Ot/v2PNLvEgRfg8aP/ZD264DkZwq6jKtB2S8x8bZO42ZX2VO8ysmzqBVOSePszMaFk7i"
    "5fVVnHQIBhAU4KPQk8Lxqi2BT2VRoEC2DeSScxOPCIA08NoIoOe5DYDMvqD4bWXXdoWcbC"
    "4MYRKf6RSY6BmhguEVy//xS/WB6QsZjIx/bpa9hOwiH0Ug3+ad52Ppi3R+3TY9UglbMrnH"
    "P9qKSpi151FVjgsBJNPcEsXCGDKpCeB7wJdoRyzjp2SWAn/xxbp908OVkBt/Qq5a3LFPAE"
    "sM1A4bDCRJGlfClLhDuFYtLZyBxuJwqtxz/eMtP/b/ryBZ0B8WbRxFgCf9i76d4NzZtPqr"
    "kp5189zc8cdlVJU1tnOetROzdO80rQX73hB6Qe0ZdBv6vxUi7GTLeY+A2/GKpPOBDUIvTZ"
    "wk4qHcTWmFpm1APfeeOoZyMPo/5eRj1mlBr2qPe5XUGVZDoP2MNk2mqtkkxbrfJkqsqyyd"
    "SBb65dablKIvYP8fkKgM9L8Z7n4Y6w/QSk0rYrFbJ/eBvtFfg28ukmAayKsoT5jAuYWj6j"
    "U79gYRjCiyjmvBC4np3uKrgNY0Owl+X97udhJuXHUI9uzM/HmbR/Pej/HrunBqFzPbjIwZ"
    "cAfUUnYAUJ5MqjuIR9Li5H/lEFbor9Sf1s+/AvB/cX11306bbb6d31Bv3sKqsLlUkaXKER"
    "3HbN6zxr6lt+NcpxxHb5/traTcAqURF4lidrmX/5IukeKeG8GJgDLl9gU7ibrfamEvdY9e"
    "HnZuP07PT8l/bpuXTR/ZxbzpYMSK8/lHiVEvH4lDokK4Na4J4xc6xMSWocgHM8hoIRuIgi"
    "rz7egqcVlgLYkYx0E9ayg5v513h+xdZoUdc0aZOW4VwsmjaneQsmEooTta1ayuEqEORSJM"
    "s1ufSg/ViWGxBAUUQdmZy7XGAiEAPfc4EjGzMWSmK6pRoKd5w1GSPR2VzrahjJIBHwRRFu"
    "7bWvWXIrTSSFiltB8oi2eO9XcFtD6qgtEdgYraavxf7b2+Ht8IZayB1zlX107L8XcLe9gT"
    "4omeXzfDc1rVWUzHBpqZLBkogtnlJteTL2QMCmTqubzmTAGGVVUtk8YB+El22nsoNQexBq"
    "D0LtvuBdfzYOhdbq6spC3JvElfcGey0npNQ+MlyqXcWlKuDC2APkRchqIy0RSW/GowlpFY"
    "BepsiW1fBGhfadAd+4Ai6wZ2mGFbHnAg+0V6KtcoHlA6tMOxt4oL0CbYdR35fH+XLxuzR/"
    "F4Ue0nfBGjnBwqr2CWQqZC/krU18Cblwx5MlXpA6KAN3TD7CTEPvESXPFx5Tcl8E7xjssn"
    "scaWb4eX5XkJ5k8t3lG0OYJTrmXce87Bqv5Zdmm7wRMoG59sQouBCKSmrL7oNw4vOj26By"
    "oId7l/d176I+bI8uXVfNoKmQPcygG9F51D9VBcKR+x7Sbaz07XhjybfjjYJvxykRQAqWpT"
    "/uBv2yA/I8JH/P4toC/Ys8l+/wAlUEV8FYrhDnxeBa9pZEVXBR7QuQ9S9mr/8BKvLCZg=="
)
