//! Everything that speaks to SQL Server: connections ([`client`]), the catalog and CDC
//! queries ([`inspect`]), value conversion ([`decode`]) and the change-table poller ([`cdc`]).

pub mod cdc;
pub mod client;
pub mod decode;
pub mod hybrid;
pub mod inspect;
pub mod retention;
