//! The apply service: writes schemas, snapshot chunks and changes into PostgreSQL
