from tortoise import BaseDBAsyncClient

RUN_IN_TRANSACTION = True


async def upgrade(db: BaseDBAsyncClient) -> str:
    return """
        CREATE TABLE IF NOT EXISTS "server_settings" (
    "key" VARCHAR(64) NOT NULL PRIMARY KEY,
    "value" JSONB NOT NULL
);
COMMENT ON TABLE "server_settings" IS 'A setting administrators change at run time (open sign-up), as JSON under a key.';
CREATE TABLE IF NOT EXISTS "users" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "name" VARCHAR(64) NOT NULL UNIQUE,
    "password_hash" VARCHAR(255) NOT NULL,
    "role" VARCHAR(8) NOT NULL,
    "disabled" BOOL NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "limit_loaded_models" INT,
    "limit_concurrent_replies" INT,
    "limit_tokens_per_day" INT
);
COMMENT ON TABLE "users" IS 'An account. Users are disabled, never deleted, so their chats keep an owner.';
CREATE TABLE IF NOT EXISTS "api_keys" (
    "id" VARCHAR(16) NOT NULL PRIMARY KEY,
    "name" VARCHAR(100) NOT NULL,
    "secret_hash" VARCHAR(64) NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "last_used_at" TIMESTAMPTZ,
    "revoked_at" TIMESTAMPTZ,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
COMMENT ON TABLE "api_keys" IS 'An API key ``llmk_<id>_<secret>``: its id is public, only the whole key''s SHA-256 is stored.';
CREATE TABLE IF NOT EXISTS "audit_log" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "at" TIMESTAMPTZ NOT NULL,
    "actor_name" VARCHAR(64),
    "action" VARCHAR(32) NOT NULL,
    "target" VARCHAR(200),
    "client" VARCHAR(64),
    "detail" JSONB,
    "actor_id" INT REFERENCES "users" ("id") ON DELETE SET NULL
);
COMMENT ON TABLE "audit_log" IS 'Who did what to accounts and workers: sign-ins (failed ones too), keys, an';
CREATE TABLE IF NOT EXISTS "chats" (
    "id" VARCHAR(64) NOT NULL PRIMARY KEY,
    "title" VARCHAR(200),
    "created_at" TIMESTAMPTZ NOT NULL,
    "updated_at" TIMESTAMPTZ NOT NULL,
    "model" VARCHAR(255),
    "requested_device" VARCHAR(8),
    "backend" VARCHAR(16),
    "system_prompt" TEXT NOT NULL,
    "temperature" DOUBLE PRECISION NOT NULL,
    "top_p" DOUBLE PRECISION NOT NULL,
    "max_new_tokens" INT NOT NULL,
    "current_message_id" INT,
    "owner_id" INT REFERENCES "users" ("id") ON DELETE RESTRICT
);
CREATE INDEX IF NOT EXISTS "idx_chats_owner_i_0a5241" ON "chats" ("owner_id", "updated_at");
COMMENT ON TABLE "chats" IS 'A conversation and its settings. ``id`` may be chosen by the client (the dashboard uses UUIDs).';
CREATE TABLE IF NOT EXISTS "messages" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "role" VARCHAR(16) NOT NULL,
    "text" TEXT NOT NULL,
    "created_at" TIMESTAMPTZ NOT NULL,
    "status" VARCHAR(16) NOT NULL,
    "error" TEXT,
    "model" VARCHAR(255),
    "running_on" VARCHAR(8),
    "backend" VARCHAR(16),
    "prompt_tokens" INT,
    "completion_tokens" INT,
    "time_to_first_token_s" DOUBLE PRECISION,
    "total_time_s" DOUBLE PRECISION,
    "tokens_per_s" DOUBLE PRECISION,
    "dropped_messages" INT,
    "chat_id" VARCHAR(64) NOT NULL REFERENCES "chats" ("id") ON DELETE CASCADE,
    "parent_id" INT REFERENCES "messages" ("id") ON DELETE CASCADE
);
COMMENT ON TABLE "messages" IS 'One message. Assistant replies carry the model, device, metrics and a status.';
CREATE TABLE IF NOT EXISTS "usage_days" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "day" DATE NOT NULL,
    "replies" INT NOT NULL,
    "prompt_tokens" INT NOT NULL,
    "completion_tokens" INT NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE,
    CONSTRAINT "uid_usage_days_user_id_613100" UNIQUE ("user_id", "day")
);
COMMENT ON TABLE "usage_days" IS 'What one user generated on one UTC day (replies through /chat and /v1).';
CREATE TABLE IF NOT EXISTS "sessions" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "token_hash" VARCHAR(64) NOT NULL UNIQUE,
    "created_at" TIMESTAMPTZ NOT NULL,
    "last_seen_at" TIMESTAMPTZ NOT NULL,
    "expires_at" TIMESTAMPTZ NOT NULL,
    "user_id" INT NOT NULL REFERENCES "users" ("id") ON DELETE CASCADE
);
COMMENT ON TABLE "sessions" IS 'A signed-in session: only the token''s SHA-256 is stored.';
CREATE TABLE IF NOT EXISTS "aerich" (
    "id" SERIAL NOT NULL PRIMARY KEY,
    "version" VARCHAR(255) NOT NULL,
    "app" VARCHAR(100) NOT NULL,
    "content" JSONB NOT NULL
);
-- Indexes the SQLite chain made by hand in migration 6 (the models do not declare them).
CREATE INDEX IF NOT EXISTS "idx_messages_parent" ON "messages" ("parent_id");
CREATE INDEX IF NOT EXISTS "idx_messages_chat" ON "messages" ("chat_id", "id");
-- Search (api/search_pg.py): words folded by case and accents (unaccent), as SQLite FTS5's unicode61 does.
CREATE EXTENSION IF NOT EXISTS unaccent;
        CREATE TEXT SEARCH CONFIGURATION "llmchat_search" (COPY = pg_catalog.simple);
        ALTER TEXT SEARCH CONFIGURATION "llmchat_search" ALTER MAPPING FOR
            asciiword, word, numword, asciihword, hword, numhword, hword_asciipart, hword_part, hword_numpart
            WITH unaccent, simple;
        CREATE FUNCTION "llmchat_search_words"(text) RETURNS text LANGUAGE sql IMMUTABLE STRICT PARALLEL SAFE
            RETURN regexp_replace(normalize($1, NFC), '[^[:alnum:]]+', ' ', 'g');
        ALTER TABLE "messages" ADD COLUMN "search" tsvector
            GENERATED ALWAYS AS (to_tsvector('llmchat_search', "llmchat_search_words"("text"))) STORED;
        CREATE INDEX "idx_messages_search" ON "messages" USING gin ("search");
        ALTER TABLE "chats" ADD COLUMN "title_search" tsvector
            GENERATED ALWAYS AS (to_tsvector('llmchat_search', "llmchat_search_words"(coalesce("title", '')))) STORED;
        CREATE INDEX "idx_chats_title_search" ON "chats" USING gin ("title_search");
"""


async def downgrade(db: BaseDBAsyncClient) -> str:
    return """
        """


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
