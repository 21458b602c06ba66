"""What every FTI process shares and nothing else: the settings base, the error types, small helpers.

It imports nothing of the project but the generated contracts, so any package may depend on it.
"""
