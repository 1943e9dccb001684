"""HTTP routers, one module per resource; service/app.py includes them."""
