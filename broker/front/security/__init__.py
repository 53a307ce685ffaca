"""Who may ask what: authentication, tokens, access rules, limits, browser rules, sessions."""
