"""The api's routes, one module per resource: parse, authorize, query, answer."""
