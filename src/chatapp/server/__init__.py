"""How the app is served, beside `app.py` in the top layer: security headers and the CSP, static assets
(versioned, compressed), the `/readyz` probe, uvicorn's HTTP protocol with its request-head cap, and the
supervisor of `chatapp serve --workers`. Nothing below the app imports these."""
