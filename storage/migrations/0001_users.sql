CREATE TABLE users (
    id            text PRIMARY KEY,
    name          text NOT NULL CHECK (char_length(name) BETWEEN 2 AND 100),
    email         text NOT NULL CHECK (email = lower(email)),
    password_hash text NOT NULL,
    role          text NOT NULL CHECK (role IN ('USER', 'ADMIN')),
    created_at    timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX users_email_key ON users (email);
