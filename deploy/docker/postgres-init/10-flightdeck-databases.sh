#!/bin/sh
# Run once by the postgres image on an empty data volume (/docker-entrypoint-initdb.d):
# a login role for the services and one database per service, owned by it.
#
#   FLIGHTDECK_DB_USER      role of the services (default: flightdeck); not a superuser
#   FLIGHTDECK_DB_PASSWORD  its password (required; URL-safe, e.g. `openssl rand -hex 24`)
#
# The password goes through a psql variable (:'app_password'), never through the shell
# into SQL text. Idempotent: running it again only resets the role's password.
set -eu

: "${FLIGHTDECK_DB_PASSWORD:?FLIGHTDECK_DB_PASSWORD must be set}"
app_user="${FLIGHTDECK_DB_USER:-flightdeck}"

psql -v ON_ERROR_STOP=1 --no-psqlrc --username "${POSTGRES_USER:-postgres}" --dbname postgres \
    -v app_user="$app_user" -v app_password="$FLIGHTDECK_DB_PASSWORD" <<'SQL'
SELECT format('CREATE ROLE %I', :'app_user')
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = :'app_user') \gexec
ALTER ROLE :"app_user" WITH LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE PASSWORD :'app_password';

SELECT format('CREATE DATABASE %I OWNER %I', name, :'app_user')
FROM unnest(ARRAY['flightdeck_auth', 'flightdeck_pipeline', 'flightdeck_admin']) AS name
WHERE NOT EXISTS (SELECT FROM pg_database WHERE datname = name) \gexec

-- Only the services' role may connect to their databases.
REVOKE ALL ON DATABASE flightdeck_auth, flightdeck_pipeline, flightdeck_admin FROM PUBLIC;
SQL
