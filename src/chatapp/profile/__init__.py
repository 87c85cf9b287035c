"""The account page (`/account`): one person's own account — change the name or the password, download every
conversation, delete it all. A layer of its own above history, because it exports and deletes everything."""
