"""User administration through auth's internal API."""
