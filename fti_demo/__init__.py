"""The demo domain (card transactions with a delayed fraud label): one user of the system, not part of it."""
