//! Window schemas.

use std::fmt;

use crate::value::FieldType;

/// One field of a schema.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub struct Field {
    pub name: String,
    pub ty: FieldType,
    pub key: bool,
}

/// An ordered list of fields; the order is the CSV column order. Key fields may stand
/// anywhere in the list.
#[derive(Clone, Debug, PartialEq, Eq, Hash, Default)]
pub struct Schema {
    fields: Vec<Field>,
    keys: Vec<usize>,
}

/// A problem with a schema declaration.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SchemaError {
    #[error("field '{field}' has type '{ty}', which Sluice does not support (use int32, int64, double, money, string, date or stamp)")]
    UnsupportedType { field: String, ty: String },
    #[error("field '{0}' is declared twice")]
    Duplicate(String),
    #[error("schema-string entry '{0}' is not NAME[*]:TYPE")]
    BadEntry(String),
    #[error("the schema has no fields")]
    Empty,
}

impl Schema {
    /// Builds a schema from fields; refuses duplicate names and empty schemas.
    pub fn new(fields: Vec<Field>) -> Result<Schema, SchemaError> {
        if fields.is_empty() {
            return Err(SchemaError::Empty);
        }
        for (i, f) in fields.iter().enumerate() {
            if fields[..i].iter().any(|g| g.name == f.name) {
                return Err(SchemaError::Duplicate(f.name.clone()));
            }
        }
        let keys = fields
            .iter()
            .enumerate()
            .filter(|(_, f)| f.key)
            .map(|(i, _)| i)
            .collect();
        Ok(Schema { fields, keys })
    }

    /// Parses `ID*:int64,symbol:string,price:double` (`*` marks a key field).
    pub fn parse_schema_string(text: &str) -> Result<Schema, SchemaError> {
        let mut fields = Vec::new();
        for entry in text.split(',') {
            let entry = entry.trim();
            if entry.is_empty() {
                continue;
            }
            let (name, ty) = entry
                .split_once(':')
                .ok_or_else(|| SchemaError::BadEntry(entry.to_string()))?;
            let name = name.trim();
            let (name, key) = match name.strip_suffix('*') {
                Some(n) => (n.trim(), true),
                None => (name, false),
            };
            if name.is_empty() {
                return Err(SchemaError::BadEntry(entry.to_string()));
            }
            let ty = FieldType::parse(ty).map_err(|ty| SchemaError::UnsupportedType {
                field: name.to_string(),
                ty,
            })?;
            fields.push(Field {
                name: name.to_string(),
                ty,
                key,
            });
        }
        Schema::new(fields)
    }

    /// All fields in order.
    pub fn fields(&self) -> &[Field] {
        &self.fields
    }

    /// Positions of the key fields, in schema order.
    pub fn key_indices(&self) -> &[usize] {
        &self.keys
    }

    /// Number of fields.
    pub fn len(&self) -> usize {
        self.fields.len()
    }

    /// True when there are no fields (never, for a built schema).
    pub fn is_empty(&self) -> bool {
        self.fields.is_empty()
    }

    /// Position of the field named `name`.
    pub fn index_of(&self, name: &str) -> Option<usize> {
        self.fields.iter().position(|f| f.name == name)
    }

    /// The field at `i`.
    pub fn field(&self, i: usize) -> &Field {
        &self.fields[i]
    }

    /// Positions of the non-key fields, in schema order.
    pub fn non_key_indices(&self) -> Vec<usize> {
        (0..self.fields.len())
            .filter(|i| !self.fields[*i].key)
            .collect()
    }

    /// The schema as a schema-string (`ID*:int64,symbol:string`).
    pub fn to_schema_string(&self) -> String {
        self.to_string()
    }
}

impl fmt::Display for Schema {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, fd) in self.fields.iter().enumerate() {
            if i > 0 {
                f.write_str(",")?;
            }
            write!(f, "{}{}:{}", fd.name, if fd.key { "*" } else { "" }, fd.ty)?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schema_string_round_trips() {
        let s = Schema::parse_schema_string("name:string, ID*:int32,price:double").unwrap();
        assert_eq!(s.key_indices(), &[1]);
        assert_eq!(s.to_string(), "name:string,ID*:int32,price:double");
    }

    #[test]
    fn schema_string_errors_name_the_field() {
        let e = Schema::parse_schema_string("ID*:int32,img:blob").unwrap_err();
        assert!(e.to_string().contains("'img'"), "{e}");
        assert!(matches!(
            Schema::parse_schema_string("ID*int32"),
            Err(SchemaError::BadEntry(_))
        ));
        assert!(matches!(
            Schema::parse_schema_string("a:int32,a:int64"),
            Err(SchemaError::Duplicate(_))
        ));
    }
}
