"""Sign up, log in, log out, and the server-side login session."""
