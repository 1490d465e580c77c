"""The realtime-sequence stream processor: events in, each user's last-100 actions out to the Feast online store."""
