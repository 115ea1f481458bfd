//! Matching a request to a policy route: an optional method and a path, exact or a prefix ending
//! in `*`. The first route that matches wins, in file order, so a specific route goes before a
//! broad prefix.

use http::Method;

/// A route's path: `/api/chat` (exactly that path) or `/api/export/*` (any path starting with
/// `/api/export/`).
///
/// ```
/// use gateway::PathPattern;
///
/// let p = PathPattern::parse("/api/export/*").unwrap();
/// assert!(p.matches("/api/export/42"));
/// assert!(!p.matches("/api/exports"));
/// assert!(PathPattern::parse("/a*b").is_err());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum PathPattern {
    /// The whole path.
    Exact(String),
    /// The path's beginning (without the `*`).
    Prefix(String),
}

impl PathPattern {
    /// Parses a pattern: it starts with `/`, and a `*` may only end it.
    pub fn parse(s: &str) -> Result<Self, String> {
        if !s.starts_with('/') {
            return Err(format!("{s:?} does not start with /"));
        }
        match s.find('*') {
            None => Ok(PathPattern::Exact(s.to_string())),
            Some(i) if i == s.len() - 1 => Ok(PathPattern::Prefix(s[..i].to_string())),
            Some(_) => Err(format!("{s:?}: `*` may only end a path")),
        }
    }

    /// Whether `path` (without the query) matches.
    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathPattern::Exact(p) => path == p,
            PathPattern::Prefix(p) => path.starts_with(p.as_str()),
        }
    }
}

/// A method and a path pattern.
#[derive(Debug, Clone)]
pub struct RouteMatch {
    method: Option<Method>,
    path: PathPattern,
}

impl RouteMatch {
    /// A matcher; `method` `None` matches every method.
    pub fn new(method: Option<Method>, path: PathPattern) -> Self {
        RouteMatch { method, path }
    }

    /// Whether a request with `method` to `path` matches.
    pub fn matches(&self, method: &Method, path: &str) -> bool {
        self.method.as_ref().is_none_or(|m| m == method) && self.path.matches(path)
    }
}

/// The index of the first of `routes` matching, if any.
pub fn first_match<'a>(
    routes: impl IntoIterator<Item = &'a RouteMatch>,
    method: &Method,
    path: &str,
) -> Option<usize> {
    routes.into_iter().position(|r| r.matches(method, path))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn first_matching_route_wins() {
        let routes = [
            RouteMatch::new(Some(Method::POST), PathPattern::parse("/api/chat").unwrap()),
            RouteMatch::new(None, PathPattern::parse("/api/*").unwrap()),
        ];
        assert_eq!(first_match(&routes, &Method::POST, "/api/chat"), Some(0));
        assert_eq!(first_match(&routes, &Method::GET, "/api/chat"), Some(1));
        assert_eq!(first_match(&routes, &Method::POST, "/api/chat/x"), Some(1));
        assert_eq!(first_match(&routes, &Method::GET, "/health"), None);
        assert!(PathPattern::parse("api").is_err());
        assert!(PathPattern::parse("/*/x").is_err());
    }
}
