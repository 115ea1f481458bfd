//! Query-string (or form body) parameters, read leniently: any byte sequence parses, the first
//! occurrence of a name wins, and numbers are checked by the caller so it can answer in its
//! API's own error style.

use axum::Form;
use axum::extract::{FromRequest, Request};

/// Parameters of one request, in order.
#[derive(Debug, Default)]
pub struct Params(Vec<(String, String)>);

impl Params {
    /// Reads the query string (GET) or an `application/x-www-form-urlencoded` body (POST).
    /// `Err` carries the status and a message for the caller's error style.
    pub async fn from_request(req: Request) -> Result<Params, (u16, String)> {
        match Form::<Vec<(String, String)>>::from_request(req, &()).await {
            Ok(Form(v)) => Ok(Params(v)),
            Err(rej) => Err((rej.status().as_u16(), rej.body_text())),
        }
    }

    pub fn get(&self, name: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// The parameter parsed as an unsigned number; `Ok(None)` when absent or empty.
    pub fn number(&self, name: &str) -> Result<Option<u64>, String> {
        match self.get(name).map(str::trim) {
            None | Some("") => Ok(None),
            Some(v) => v
                .parse::<u64>()
                .map(Some)
                .map_err(|_| format!("Invalid value for {name}: '{v}'")),
        }
    }
}
