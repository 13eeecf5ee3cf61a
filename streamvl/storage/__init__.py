"""LanceDB tables: schemas, writer, reader, upkeep, the stream tables, resume ledger, sinks.

  schema      table names and KEYS, Arrow schemas, conform, SQL literals; StreamState <-> its row
  connection  Connection (connect, open, create; lance_errors turns LanceDB errors into StoreError)
  writer      Writer.upsert / Writer.group -> WriteGroup (batches committed once), delete
  reader      Reader: search_clips (prefiltered ANN), frames_of/for, segments, clip_windows, read, table
  upkeep      Upkeep: maintain (compaction, ANN index, delta merge), optimize, fragments
  streams     StreamTables: stream states, events, serve-index requests
  store       Store: all of the above behind one object (it only delegates)
  ledger      resume checkpoints; sink: TableSink, one table's writer with periodic upkeep
"""
