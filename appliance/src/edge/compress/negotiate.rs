//! `Accept-Encoding` negotiation (RFC 9110 §12.5.3): the coding with the highest q-value among
//! those offered; on a tie the server's preference. Malformed elements are ignored, and only the
//! first 32 elements are read, so a hostile header costs nothing.

use actix_web::http::header::HeaderValue;

use super::Coding;

/// The coding to send a client whose `Accept-Encoding` is `accept`, among those `offered`
/// (identity is always possible: a client that refuses it still gets it rather than a 406).
pub(crate) fn negotiate(accept: Option<&HeaderValue>, offered: impl Fn(Coding) -> bool) -> Coding {
    let Some(accept) = accept.and_then(|v| v.to_str().ok()) else {
        return Coding::Identity;
    };
    let mut wildcard = None;
    let mut rated: [Option<u16>; 4] = [None; 4];
    for element in accept.split(',').take(32) {
        let mut parts = element.split(';');
        let name = parts.next().unwrap_or_default().trim();
        let Some(q) = quality(parts) else { continue };
        let slot = match name.to_ascii_lowercase().as_str() {
            "*" => {
                wildcard = Some(q);
                continue;
            }
            "identity" => 0,
            "gzip" | "x-gzip" => 1,
            "br" => 2,
            "zstd" => 3,
            _ => continue,
        };
        rated[slot] = Some(q);
    }
    let q_of = |coding: Coding| {
        let slot = match coding {
            Coding::Identity => 0,
            Coding::Gzip => 1,
            Coding::Brotli => 2,
            Coding::Zstd => 3,
        };
        rated[slot].or(wildcard).unwrap_or(0)
    };
    // Identity is acceptable unless refused (then it is still the fallback); unless the client
    // rates it, by name or by `*`, any coding it lists is preferred to it.
    let mut best = (Coding::Identity, rated[0].or(wildcard).unwrap_or(1).max(1));
    for coding in Coding::COMPRESSED {
        let q = q_of(coding);
        if q > 0 && offered(coding) && q >= best.1 && (q > best.1 || best.0 == Coding::Identity) {
            best = (coding, q);
        }
    }
    best.0
}

/// The q-value of an element's parameters, in thousandths; `None` when malformed.
fn quality<'a>(params: impl Iterator<Item = &'a str>) -> Option<u16> {
    let mut q = 1000;
    for param in params {
        let (name, value) = param.trim().split_once('=')?;
        if name.trim().eq_ignore_ascii_case("q") {
            let value: f32 = value.trim().parse().ok()?;
            if !(0.0..=1.0).contains(&value) {
                return None;
            }
            q = (value * 1000.0).round() as u16;
        }
    }
    Some(q)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pick(accept: &str) -> Coding {
        negotiate(Some(&HeaderValue::from_str(accept).unwrap()), |_| true)
    }

    #[test]
    fn the_highest_q_wins_and_ties_go_to_the_smallest_coding() {
        assert_eq!(pick("gzip"), Coding::Gzip);
        assert_eq!(pick("gzip, deflate, br, zstd"), Coding::Brotli);
        assert_eq!(pick("gzip;q=1.0, br;q=0.5"), Coding::Gzip);
        assert_eq!(pick("zstd, gzip;q=0.9"), Coding::Zstd);
        assert_eq!(pick("deflate"), Coding::Identity);
        assert_eq!(pick("gzip;q=0"), Coding::Identity);
        assert_eq!(pick("*"), Coding::Brotli);
        assert_eq!(pick("*;q=0.5, br;q=0"), Coding::Zstd);
        assert_eq!(pick("identity;q=1, gzip;q=0.5"), Coding::Identity);
        assert_eq!(negotiate(None, |_| true), Coding::Identity);
    }

    #[test]
    fn only_offered_codings_are_chosen_and_junk_is_ignored() {
        let accept = HeaderValue::from_static("br, gzip;q=0.8");
        assert_eq!(
            negotiate(Some(&accept), |c| c == Coding::Gzip),
            Coding::Gzip
        );
        assert_eq!(pick("gzip;q=abc, br;q=7, zstd;q=0.4"), Coding::Zstd);
        assert_eq!(pick(",,;;=,gzip;q"), Coding::Identity);
        let hostile = format!("{}gzip", "x;q=0.1, ".repeat(1000));
        assert_eq!(
            pick(&hostile),
            Coding::Identity,
            "elements past the 32nd are not read"
        );
    }
}
