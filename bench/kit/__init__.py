"""The benchmarks' shared kit: machine and database, the app process, HTTP client, CPU meters, statement log, tables."""
