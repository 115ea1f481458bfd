//! Priority classes: names and order come from configuration, any number up to [`MAX_CLASSES`].

use std::sync::Arc;

use crate::LimiterError;

/// Most classes one queue may have: every script call that looks at all classes stays bounded.
pub const MAX_CLASSES: usize = 32;

/// A priority class: its place in the configured order, 0 being served first.
///
/// Obtain one from [`Classes::get`] (by name) or [`Class::new`] (by index); an index the queue
/// was not configured with is refused when used.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Class(u8);

impl Class {
    /// The class at `index` in the configured order (0 = highest priority).
    pub const fn new(index: u8) -> Self {
        Class(index)
    }

    /// Its index in the configured order (0 = highest priority).
    pub fn index(self) -> usize {
        usize::from(self.0)
    }
}

/// The configured classes, highest priority first. Cheap to clone.
///
/// ```
/// use limiter_core::Classes;
///
/// let classes = Classes::new(["interactive", "batch"]).unwrap();
/// let batch = classes.get("batch").unwrap();
/// assert_eq!(batch.index(), 1);
/// assert_eq!(classes.name(batch), Some("batch"));
/// assert!(classes.get("other").is_none());
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Classes {
    names: Arc<[String]>,
}

impl Classes {
    /// Classes from their names in priority order. Refused: no name, more than [`MAX_CLASSES`],
    /// an empty or duplicate name, or one longer than 64 bytes.
    pub fn new<I, S>(names: I) -> Result<Self, LimiterError>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let names: Vec<String> = names.into_iter().map(Into::into).collect();
        if names.is_empty() || names.len() > MAX_CLASSES {
            return Err(LimiterError::InvalidArgument(format!(
                "admission needs 1 to {MAX_CLASSES} priority classes, not {}",
                names.len()
            )));
        }
        for (i, n) in names.iter().enumerate() {
            if n.is_empty() || n.len() > 64 {
                return Err(LimiterError::InvalidArgument(format!(
                    "priority class name {n:?} must be 1-64 bytes"
                )));
            }
            if names[..i].contains(n) {
                return Err(LimiterError::InvalidArgument(format!(
                    "priority class {n:?} is named twice"
                )));
            }
        }
        Ok(Classes {
            names: names.into(),
        })
    }

    /// The class of that name.
    pub fn get(&self, name: &str) -> Option<Class> {
        self.names
            .iter()
            .position(|n| n == name)
            .and_then(|i| u8::try_from(i).ok())
            .map(Class)
    }

    /// The name of a class, if it is one of these.
    pub fn name(&self, class: Class) -> Option<&str> {
        self.names.get(class.index()).map(String::as_str)
    }

    /// Whether `class` is one of these.
    pub fn contains(&self, class: Class) -> bool {
        class.index() < self.names.len()
    }

    /// How many classes there are (at least one).
    pub fn len(&self) -> usize {
        self.names.len()
    }

    /// Always false: there is at least one class.
    pub fn is_empty(&self) -> bool {
        self.names.is_empty()
    }

    /// Every class with its name, highest priority first.
    pub fn iter(&self) -> impl Iterator<Item = (Class, &str)> {
        self.names
            .iter()
            .enumerate()
            .filter_map(|(i, n)| Some((Class(u8::try_from(i).ok()?), n.as_str())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_checked() {
        assert!(Classes::new(Vec::<String>::new()).is_err());
        assert!(Classes::new(["a", "a"]).is_err());
        assert!(Classes::new([""]).is_err());
        assert!(Classes::new((0..33).map(|i| i.to_string())).is_err());
        let c = Classes::new((0..32).map(|i| i.to_string())).expect("32 classes");
        assert_eq!(c.len(), 32);
        assert_eq!(c.get("31"), Some(Class::new(31)));
        assert!(!c.contains(Class::new(32)));
    }
}
