"""Chats as trees (edit and regenerate keep the earlier branch), paging the chat list, and
full-text search of titles and messages (SQLite FTS5, kept in step by triggers).

Existing chats become single-branch trees: each message follows the one before it."""

from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        ALTER TABLE "chats" ADD "current_message_id" INT;
        ALTER TABLE "messages" ADD "parent_id" INT REFERENCES "messages" ("id") ON DELETE CASCADE;
        CREATE INDEX "idx_chats_owner_i_0a5241" ON "chats" ("owner_id", "updated_at");
        CREATE INDEX IF NOT EXISTS "idx_messages_parent" ON "messages" ("parent_id");
        CREATE INDEX IF NOT EXISTS "idx_messages_chat" ON "messages" ("chat_id", "id");
        UPDATE "messages" SET "parent_id" = (
            SELECT MAX(p."id") FROM "messages" p WHERE p."chat_id" = "messages"."chat_id" AND p."id" < "messages"."id");
        UPDATE "chats" SET "current_message_id" = (SELECT MAX(m."id") FROM "messages" m WHERE m."chat_id" = "chats"."id");
        CREATE VIRTUAL TABLE "messages_fts" USING fts5(
            "text", content='messages', content_rowid='id', tokenize='unicode61 remove_diacritics 2');
        CREATE TRIGGER "messages_fts_insert" AFTER INSERT ON "messages" BEGIN
            INSERT INTO "messages_fts" (rowid, "text") VALUES (new."id", new."text");
        END;
        CREATE TRIGGER "messages_fts_delete" AFTER DELETE ON "messages" BEGIN
            INSERT INTO "messages_fts" ("messages_fts", rowid, "text") VALUES ('delete', old."id", old."text");
        END;
        CREATE TRIGGER "messages_fts_update" AFTER UPDATE OF "text" ON "messages" BEGIN
            INSERT INTO "messages_fts" ("messages_fts", rowid, "text") VALUES ('delete', old."id", old."text");
            INSERT INTO "messages_fts" (rowid, "text") VALUES (new."id", new."text");
        END;
        INSERT INTO "messages_fts" ("messages_fts") VALUES ('rebuild');
        CREATE VIRTUAL TABLE "chat_titles_fts" USING fts5(
            "chat_id" UNINDEXED, "title", tokenize='unicode61 remove_diacritics 2');
        CREATE TRIGGER "chat_titles_fts_insert" AFTER INSERT ON "chats" WHEN new."title" IS NOT NULL BEGIN
            INSERT INTO "chat_titles_fts" ("chat_id", "title") VALUES (new."id", new."title");
        END;
        CREATE TRIGGER "chat_titles_fts_delete" AFTER DELETE ON "chats" BEGIN
            DELETE FROM "chat_titles_fts" WHERE "chat_id" = old."id";
        END;
        CREATE TRIGGER "chat_titles_fts_update" AFTER UPDATE OF "title" ON "chats" BEGIN
            DELETE FROM "chat_titles_fts" WHERE "chat_id" = old."id";
            INSERT INTO "chat_titles_fts" ("chat_id", "title") SELECT new."id", new."title" WHERE new."title" IS NOT NULL;
        END;
        INSERT INTO "chat_titles_fts" ("chat_id", "title") SELECT "id", "title" FROM "chats" WHERE "title" IS NOT NULL;"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        DROP TABLE IF EXISTS "chat_titles_fts";
        DROP TABLE IF EXISTS "messages_fts";
        DROP INDEX IF EXISTS "idx_messages_chat";
        DROP INDEX IF EXISTS "idx_messages_parent";
        DROP INDEX IF EXISTS "idx_chats_owner_i_0a5241";
        ALTER TABLE "chats" DROP COLUMN "current_message_id";
        ALTER TABLE "messages" DROP COLUMN "parent_id";"""


MODELS_STATE = (
    "eJztnW1T4zgSgP+KKl8OqgILmYHhpra2KkDmJrdApiDcbO3clhG2SFw4kleSYag9/vu1/B"
    "K/RDY2JBnH608QWS3bj+SWulsvf3VmzCKO2O279q/kqfMR/dWheEbgn8yVLupg143TVYLE"
    "t46fFbu2cU+e/ER8KyTHpoT0O+wIAkkWESa3XWkzqnL3Kep/GSIQQDc3jjO7N362rV+Mnw"
    "UxOZG/3Nx8RLYUyLaQLZDr3Tq22UWMOk9ITgl6nDKHKOF/CHT1ub/TOzhU+YRknFi76gks"
    "ZsIj2HSyjpt51P7TI4ZkEwICHG757Q9ItqlFvhMR/XTvjTubOFYKsG2pAvx0Qz65ftrJFP"
    "NPfk71IreGyRxvRuPc7pOcMjrPDu+pUieEEo4lsRLQqec4Yf1EScGzQoLkHpk/pBUnWOQO"
    "e46qOiUdPEGc1jGMi9HYuBqMDaOzUK2RRAJ+mGQyqpqETaXw33+GvxsOoRM5hZ/7h8/BfW"
    "IOQS51w//0L08+9y+39g+31Q0ZtKugwV2EV3r+pWe/CCxxUIhPPcbs/60AOsq/HNRRQsw6"
    "/irWD3tvrwztvb183Oqa4h3zDb4kY4rFtArmjFgDaR++LwH78H0ua3UpjRqIKRgGloukT+"
    "GKtGdETzstmYFthaK70T+biB5e0BqB3g61WQH68fB8cDXun39Rt5sJ8afj8+uPB+pKz099"
    "yqRuZTXQvBD0dTj+jNRP9PvoYuDjZUJOuH/HON/49456JuxJZlD2aGAroXij1IhaqtYdLK"
    "ThiVfVe1Z2CTUfPnJdKn5DKjpiUljTnDyw+1fVc1qyreU61zJ8jtzQDf6GVOprNyGRqVrg"
    "s4nKeqIeYqe3//7D+6N3h++PIIv/oPOUDwUVPrwYQ7+ohtV399oRn8K1SPcTjNntCQVjxo"
    "c8hCfC1NQN9ULL5zosZsPgPketJ0qNv2aOH+d2SLJRwbvDGxMZDNn6Vyf900HHJ3yLzftH"
    "zC0jhVpdYT2WSZnnXbw0682yKZjiiQ9HvYV65sje9CxbDqjkems0vtottEhVPsNhk3Im6d"
    "cpQxbYgI9TLJFkCJsm84AnwhQSGb8nXHxEAprPjk0F2rrDtkMssBOJgOxsu6tsRNGF7AsG"
    "6PKK/i/F1symtnoZMEDBJDWnmE4IXLxj3CQ7HnUYtsQuuiAPhCOMXCwE3AJKU7+gnFWYrL"
    "laq6zCChtnfQ3WJWirboGBWr23b0fx9er2y4ziQf8wblR1RqSlXmUk12wkt2obGYipJ6rG"
    "OJRooBPiXa8E4He9XMDqUhqwxBw6jiqAY4nmNeBeKZdar8Cl1lt0qZmOTWglxLFE8xAvX0"
    "dYRMIoa5Hvv69GF3q+sUS217VNif6HHBiVbR7nAq4KRapnjXhunfd/y6I+ORsdZ7tMVcDx"
    "om5mFU3fpMirbN+aIV+x6evjWp/tWzO4ZU3fZKNK2b7wAOji+uzsRxm/oOBlR2P2+undIo"
    "MXTEFZNv6KABAYiAKrFN8OVSFQQaQEuGA+3tzY1s0NmuEndEvAyGSCUHQbRESDjgZtqf8t"
    "LKa3DF4aeQKs1evr4anY1oRgV3+/l03abx32SIM27blWFAv5ow3OrqPnzbd9pS2dSgbRXK"
    "B545zVDCXbkOHf0NmQUHEVaz0t2dZ6XWpdE1kKnz4zWKiiTOcCDVSmBwdllOnBQb4yVdfS"
    "ypQTeFOhPg+LPNhmpY5LJ9s87EcloB/lIj/KAlejakIrDcUSIs3Du6zZconZW0/QJmeGy9"
    "nM1XQWY/I9xzBfEFyf87TTWRHsor5g8Nu42B8y7wrORhf/irJnnSQZVyqZuYqOxzWq5JPD"
    "cA77jFyG/J0SXBX7vd0P64d/Oro+PhugL5eDk+HVMHRMzXte/6JKggQ7sOMvB/2zLGvmGm"
    "41ypHEevn+82AzAStFRckjGOGgf0UFF9+i4PomufQODleluJcSNU4Ych7nhEpjRoTAE1LN"
    "i6oXbv2pi5h9L1E1uEmRFumLLuq5H651URe4qJONKuWivgQr8XJ4Mi5yUSeUcvDBa9TxcS"
    "j56ddL4uCcCHiI+jwoZQOt/Tzcz6v04ke4NI78BMl8X36y0l52548oQaHELuoLYasPRyJO"
    "XMcmApmY88CV7t+piwLzswsygM4M5qFhBELSE4vO+6WX3s4+q9fsM86qOeCj/A2cK7N861"
    "qC+VzFqI7yNwLuuq3pNtSR38430+ldJtQRdC1VNFgssUaXlclmrj+E21BNRjjXTSzJV2Vz"
    "gSZ4YdetytpIzqojOR6l8AhGtZnCaanmoW6jNxumlYPoS3WX64Jc67fSeFyDLttWXKoC1s"
    "q2kBchqwE1IILcXIQN0tCALgrT5JXwyrBNzYCvPCwmsWP4DCtizwi2tEvRVrrAcAmvTDst"
    "2NIuQdvizHXBrM93gufqb51oq741feQUS220rGCpUizSCDfXqhcrudgP3VZyfqdk2nb7Yk"
    "zSnOqchpVDktEyjQ1rwWVjkokvV79jxGKzXQLU8sHHmrXZslhTH2vVrTiSbdh2LChpXaHe"
    "DaG90kjvFeEPhF8FK5k6mnhvOkO3KOor/KxGtCyqXPC3Hy2jQqm9QaKtQRCWiHsUqWE62m"
    "IuocFOI5673UVYILVIE3lQYcn9QTKLt5Z/gzeEgO+DrUjLjjXC7O3CrJxRRn5Y+AE7niYu"
    "nL9Cei7wpgXSNe0adZiXtkJ6YVzyY9aeXiu9f4q12y7NrxVqMM+fW2jhshsBf1VbIjFK1H"
    "JOjuYtA5L81OvxCYLC0FY02UROOfMmU/STGoj4M0t+etjXLDhdYrkaVfVtvr8YFBKsIG0n"
    "r/ygySsW1nQHKtafY9VjXXeQCvA3S0epAP3CGia/0VdojAmJ9U3M3qt1i6xLBKbRaOsRf2"
    "k04nYr0nYr0hp4QGq6FalPXTsaDmqjaCRMePnTMMItQXeRKlggzAmybKHKsrqI+nt5Bkzg"
    "p2BqtrXNkb/hC5jUxIURK/KXC2hPv1hq4e3k7XqNf3/s2RYNdIgk/dfB3rmVD7ZYEGxglG"
    "s1c/JqvxIhtvw3bSpepPI1wQEGGDHNMZgTYhnMtyC3Ks7zlPVay8ej0VnKo3c8zM7VvT4/"
    "Hlxu7W+n5x5obJd2LcLfcC2CY8/8XeexpaaOzIeFJQc9OdJt+H7x8wpQwU2ihe3VvVpFRb"
    "TI85An5qFpfa8v4F4Ub1Hn+BDKhPyT5y6+PuQfn/C4YT1Jbsg/O0PtjYBKTuupWassRceL"
    "Jnu8nk4yNtjEBiSIEFDuG9uQ8r5cBSU1CdSq3W8RshwvXIJo0cSauAJLzaixJ5RYOzZFoe"
    "TH+EBYvwMrefLsGwpq/Wz18rMFq0qqeoLSUq3P7UWfW2s156NvsNWszigVBD6VV55vmpBt"
    "YM1vSE1HTAqrmnx3bSjuFRWdlmyrudbV3E4raKcVtNMKck84Jdw2px2NSRNe6RaebBrnec"
    "mWyQfa2hf1si/U6TgVTy1MiLQB5nIBZvVRVSAcZm8g3f1SJ83sF5w0s685aYZRqV3xl79m"
    "JCHSrhrZpFUjz/8H1QdddA=="
)
