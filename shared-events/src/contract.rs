//! The contract documents committed under `docs/`: the JSON Schema of each
//! event (generated here from the types), and the check that keeps a
//! committed document equal to the one the code renders (used for the
//! services' OpenAPI documents too).

use std::path::Path;

use schemars::Schema;
use serde_json::Value;

use crate::envelope::{Envelope, Event};
use crate::order::{OrderCancelled, OrderPlaced};

/// The environment variable that makes [`check_committed`] rewrite the
/// committed document instead of comparing it.
pub const UPDATE_VAR: &str = "UPDATE_CONTRACT";

/// The JSON Schema of an `OrderPlaced` v1 message: the [`Envelope`] with its
/// payload, as committed in `docs/schemas/order-placed.v1.json`.
pub fn order_placed_v1() -> Schema {
    envelope_schema::<OrderPlaced>("OrderPlaced v1")
}

/// The JSON Schema of an `OrderCancelled` v1 message, as committed in
/// `docs/schemas/order-cancelled.v1.json`.
pub fn order_cancelled_v1() -> Schema {
    envelope_schema::<OrderCancelled>("OrderCancelled v1")
}

/// The schema of `Envelope<P>`, with the envelope's type, version,
/// aggregate type and position fixed to `P`'s. Every producer writes the
/// position; consumers also take events from before it was written.
fn envelope_schema<P: Event + schemars::JsonSchema>(title: &str) -> Schema {
    let mut schema = schemars::schema_for!(Envelope<P>);
    schema.insert("title".into(), Value::from(title));
    if let Some(Value::Object(properties)) = schema.get_mut("properties") {
        let constants = [
            ("event_type", Value::from(P::EVENT_TYPE)),
            ("schema_version", Value::from(P::SCHEMA_VERSION)),
            ("aggregate_type", Value::from(P::AGGREGATE_TYPE)),
            ("position", Value::from(P::POSITION)),
        ];
        for (name, value) in constants {
            if let Some(Value::Object(property)) = properties.get_mut(name) {
                property.insert("const".into(), value);
            }
        }
        if let Some(Value::Object(position)) = properties.get_mut("position") {
            position.remove("default");
        }
    }
    if let Some(Value::Array(required)) = schema.get_mut("required") {
        required.push(Value::from("position"));
        required.sort_by(|a, b| a.as_str().cmp(&b.as_str()));
    }
    schema
}

/// A document as it is committed: pretty JSON and a final newline.
pub fn render(document: &impl serde::Serialize) -> String {
    let mut text = serde_json::to_string_pretty(document).expect("a document of plain data");
    text.push('\n');
    text
}

/// Compares `rendered` with the committed file at `path`; with
/// `UPDATE_CONTRACT=1` in the environment, writes it there instead. The error
/// says how to regenerate the file: `regenerate` is the command that does.
pub fn check_committed(path: &Path, rendered: &str, regenerate: &str) -> Result<(), String> {
    if std::env::var_os(UPDATE_VAR).is_some_and(|value| value == "1") {
        if let Some(parent) = path.parent() {
            std::fs::create_dir_all(parent)
                .map_err(|e| format!("creating {}: {e}", parent.display()))?;
        }
        return std::fs::write(path, rendered)
            .map_err(|e| format!("writing {}: {e}", path.display()));
    }
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    if committed == rendered {
        return Ok(());
    }
    let first_difference = committed
        .lines()
        .zip(rendered.lines())
        .position(|(a, b)| a != b)
        .unwrap_or_else(|| committed.lines().count().min(rendered.lines().count()));
    Err(format!(
        "{} differs from what the code renders (from line {}). If the change is \
         intended, regenerate the file with `{UPDATE_VAR}=1 {regenerate}` and commit it.",
        path.display(),
        first_difference + 1,
    ))
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use chrono::Utc;
    use uuid::Uuid;

    use super::*;
    use crate::order::OrderPlacedLine;

    fn committed(name: &str) -> PathBuf {
        Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("../docs/schemas")
            .join(name)
    }

    #[test]
    fn the_committed_event_schemas_are_the_codes() {
        for (file, schema) in [
            ("order-placed.v1.json", order_placed_v1()),
            ("order-cancelled.v1.json", order_cancelled_v1()),
        ] {
            if let Err(message) = check_committed(
                &committed(file),
                &render(&schema),
                "cargo test -p shared-events contract",
            ) {
                panic!("{message}");
            }
        }
    }

    /// The schema names every field an event carries, marks as required
    /// those it always carries, and fixes its type, version and position.
    #[test]
    fn an_event_has_the_fields_of_the_schema() {
        let order_id = Uuid::now_v7();
        let placed = Envelope::new(
            Uuid::now_v7(),
            Utc::now(),
            OrderPlaced {
                order_id,
                customer_id: "ivy".into(),
                currency: "EUR".into(),
                total_minor: 200,
                lines: vec![OrderPlacedLine {
                    sku: "SKU-1".into(),
                    quantity: 2,
                    unit_price_minor: 100,
                }],
                placed_at: Utc::now(),
            },
        );
        let cancelled = Envelope::new(
            Uuid::now_v7(),
            Utc::now(),
            OrderCancelled {
                order_id,
                customer_id: "ivy".into(),
                currency: "EUR".into(),
                total_minor: 200,
                cancelled_at: Utc::now(),
                reason: Some("too late".into()),
            },
        );
        let placed_wire: Value = serde_json::from_slice(&placed.to_bytes()).unwrap();
        let cancelled_wire: Value = serde_json::from_slice(&cancelled.to_bytes()).unwrap();
        let placed_schema = order_placed_v1().to_value();
        let cancelled_schema = order_cancelled_v1().to_value();
        let definition = |schema: &Value, name: &str| schema["$defs"][name].clone();
        for (object, schema) in [
            (&placed_wire, placed_schema.clone()),
            (
                &placed_wire["payload"],
                definition(&placed_schema, "OrderPlaced"),
            ),
            (
                &placed_wire["payload"]["lines"][0],
                definition(&placed_schema, "OrderPlacedLine"),
            ),
            (&cancelled_wire, cancelled_schema.clone()),
            (
                &cancelled_wire["payload"],
                definition(&cancelled_schema, "OrderCancelled"),
            ),
        ] {
            let fields: Vec<&String> = object.as_object().unwrap().keys().collect();
            let properties: Vec<&String> =
                schema["properties"].as_object().unwrap().keys().collect();
            for field in &fields {
                assert!(properties.contains(field), "{field} is not in the schema");
            }
            for required in schema["required"].as_array().unwrap() {
                let required = required.as_str().unwrap();
                assert!(object.get(required).is_some(), "{required} is missing");
            }
        }
        for (wire, schema) in [
            (&placed_wire, &placed_schema),
            (&cancelled_wire, &cancelled_schema),
        ] {
            for field in ["event_type", "schema_version", "aggregate_type", "position"] {
                assert_eq!(schema["properties"][field]["const"], wire[field], "{field}");
            }
        }
    }
}
