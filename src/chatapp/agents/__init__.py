"""The conversational agent: the product agent, its models, and the runtime that runs it in the app process.

It implements `chatapp.conversations.agent_runtime.AgentRuntime`; the LiveKit worker that runs the same agent
out of process lives in `chatapp.livekit`.
"""
