"""Getting data in: snapshot readers, change-event codecs, the Kafka consumer loop."""
