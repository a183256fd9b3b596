"""The user-facing side: Client, ScalerFuture, ObjectReference, Serializer."""
