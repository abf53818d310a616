//! SQL Server to PostgreSQL type mapping and exact PostgreSQL binary COPY encoders
