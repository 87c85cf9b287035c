"""The foundation every feature stands on, with no feature in it: settings, the database (embedded or external,
pool, transactions, outage errors), Piccolo tables and migrations, input validation, logging, metrics, OpenAPI
helpers and the test-only fault switches."""
