-- sipcfg's shared store, schema 3: each phone's last download, written by every node every few seconds
-- (the newest wins), so that any node's console shows what the phone last fetched from any node.
CREATE TABLE downloads (
    subject    text PRIMARY KEY,
    at         bigint NOT NULL,
    address    text NOT NULL,
    file       text NOT NULL,
    status     integer NOT NULL,
    user_agent text NOT NULL
);
