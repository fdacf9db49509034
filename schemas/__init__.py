"""The one home of feature names, dtypes, shapes and the feature configuration.

Every writer and reader in cattag imports from here; nothing here imports the rest of cattag.
"""
