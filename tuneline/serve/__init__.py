"""The served model: requests, batching across them, their recording, and monitoring it."""
