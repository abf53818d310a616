//! The capture service: reads SQL Server catalogs, snapshots and CDC
