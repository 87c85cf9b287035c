"""Sign up, log in, log out, the server-side login session and its store, rate limits (counted in PostgreSQL)
with the password-hashing gate, and how errors are answered (`web`: a page, a toast or JSON)."""
