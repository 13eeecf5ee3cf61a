"""LanceDB tables: schemas, writer, reader, resume ledger, upkeep."""
