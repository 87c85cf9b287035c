"""The conversational agent: the product agent, its models and the runtimes that run it."""
