"""The Slack front end: slack-bolt translation, Block Kit rendering."""
