-- One database per service, created on the first start of an empty data directory.
CREATE DATABASE flightdeck_auth;
CREATE DATABASE flightdeck_pipeline;
CREATE DATABASE flightdeck_admin;
