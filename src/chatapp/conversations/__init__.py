"""The live conversation: transcript buffer, ingest, stream and New Chat."""
