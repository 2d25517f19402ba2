"""The console front end: a local chat over the same core, and the end-to-end test harness."""
