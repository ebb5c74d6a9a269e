"""The HTTP edge: FastAPI routes, problem+json errors, (later) SSE and Socket.IO."""
