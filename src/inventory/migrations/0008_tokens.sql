-- /oauth/token state (see tokens.rs): bootstrap tokens already exchanged, by
-- jti, and refresh-token families, holding only a SHA-256 of the refresh
-- token that is good now.
CREATE TABLE oauth_used_bootstrap (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
CREATE TABLE oauth_refresh_families (id TEXT PRIMARY KEY, doc TEXT NOT NULL) STRICT;
