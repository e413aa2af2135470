//! The HTTP → HTTPS redirect listener: every request gets a 308 to the same host and path on
//! the TLS port (308 keeps the method and body, unlike 301), but ACME's HTTP-01 validations,
//! which get their token's answer.

use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::http::header::LOCATION;
use actix_web::{HttpRequest, HttpResponse};

use super::validate;
use crate::acme::Challenges;

/// Where plain-HTTP requests are sent.
#[derive(Debug, Clone)]
pub(crate) struct Redirect {
    /// TLS port named in `Location`; 443 is left out.
    pub(crate) https_port: u16,
    /// Pending ACME challenges, when TLS is on.
    pub(crate) challenges: Option<Arc<Challenges>>,
}

impl Redirect {
    pub(crate) fn respond(&self, req: &HttpRequest) -> HttpResponse {
        if let Some(answer) = self
            .challenges
            .as_ref()
            .and_then(|c| c.http_response(req.path()))
        {
            return answer;
        }
        let Some(authority) = validate::authority(req) else {
            return HttpResponse::BadRequest().body("400 Bad Request: a Host header is required\n");
        };
        let host = validate::host_name(authority);
        let port = if self.https_port == 443 {
            String::new()
        } else {
            format!(":{}", self.https_port)
        };
        let target = req.uri().path_and_query().map_or("/", |p| p.as_str());
        HttpResponse::build(StatusCode::PERMANENT_REDIRECT)
            .insert_header((LOCATION, format!("https://{host}{port}{target}")))
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actix_web::test::TestRequest;

    #[test]
    fn keeps_host_and_path_and_swaps_the_port() {
        let req = TestRequest::default()
            .uri("/a/b?c=1")
            .insert_header(("host", "example.com:8080"))
            .to_http_request();
        let to_8443 = Redirect {
            https_port: 8443,
            challenges: None,
        };
        let res = to_8443.respond(&req);
        assert_eq!(res.status(), StatusCode::PERMANENT_REDIRECT);
        assert_eq!(
            res.headers().get(LOCATION).unwrap(),
            "https://example.com:8443/a/b?c=1"
        );
        let to_443 = Redirect {
            https_port: 443,
            challenges: None,
        };
        let res = to_443.respond(&req);
        assert_eq!(
            res.headers().get(LOCATION).unwrap(),
            "https://example.com/a/b?c=1"
        );
    }
}
