-- chatapp's role and database on the database host, once, as PostgreSQL's superuser:
--   sudo -u postgres psql -v password='the password in DATABASE_URL' -f deploy/postgresql/setup.sql
-- PostgreSQL 15 or newer. The role owns its database, so it may create its tables in schema public
-- (PostgreSQL 15 no longer lets every role do that) and `chatapp migrate` runs as it: no superuser needed.
-- Then let the app hosts in (pg_hba.conf, e.g. `host chatapp chatapp 10.0.0.0/24 scram-sha-256`) and listen on
-- the private address (listen_addresses in postgresql.conf); see deploy/README.md.
\set ON_ERROR_STOP on
CREATE ROLE chatapp LOGIN PASSWORD :'password';
CREATE DATABASE chatapp OWNER chatapp ENCODING 'UTF8' TEMPLATE template0;
