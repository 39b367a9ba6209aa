"""Database access: the tables (`models`) and the async engine (`engine`)."""
