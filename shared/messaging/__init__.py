"""Service Bus messaging: the work-message schema, the publisher and dead-letter replay."""
