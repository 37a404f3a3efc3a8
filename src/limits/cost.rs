//! What a GraphQL operation may cost, known before it runs: the number of objects it may
//! return, each list counted at its page size, plus [`COURT`] for every field that may ask the
//! court source and [`MUTATION`] for every mutation; and its depth.
//!
//! Worked out from the operation's text and the schema's shape alone, so that an operation
//! built to make the server work (thousands of aliases of a large list, deep nesting) is
//! refused before any of it runs, in about the time it takes to read it.

use async_graphql::parser::types::{
    BaseType, DocumentOperations, ExecutableDocument, Field, FragmentDefinition, Selection,
    SelectionSet, TypeKind, TypeSystemDefinition,
};
use async_graphql::parser::Positioned;
use async_graphql::{Name, Value, Variables};
use std::collections::HashMap;

/// Points for a field that may ask the court source (`process`, `startDownload`).
pub const COURT: u64 = 100;
/// Points for every mutation.
pub const MUTATION: u64 = 10;
/// Size assumed for a list whose length no argument bounds.
pub const UNBOUNDED_LIST: u64 = 100;
/// Deepest nesting allowed.
pub const MAX_DEPTH: usize = 15;
/// Most field selections an operation may make, fragments expanded, every alias and scalar
/// field counted (and introspection's): objects are what the cost counts, but a document of
/// tens of thousands of scalar aliases costs the server too. (Fragments are summed once each,
/// so pricing a document whose fragments multiply — each spreading the next twice — stays
/// linear in its text, and it is refused without being expanded.)
pub const MAX_SELECTIONS: usize = 2_000;

/// What an operation costs.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Cost {
    /// Points, as charged to the caller's rate limit.
    pub points: u64,
    /// Deepest nesting of fields.
    pub depth: usize,
    /// Field selections, fragments expanded.
    pub selections: usize,
}

#[derive(Debug, Clone)]
struct FieldShape {
    /// The named type it returns.
    ty: String,
    /// Whether it returns a list.
    list: bool,
}

/// What the cost needs to know of the schema: each object type's fields, their types, and
/// whether they are lists.
#[derive(Debug, Clone, Default)]
pub struct SchemaShape {
    objects: HashMap<String, HashMap<String, FieldShape>>,
}

fn named(base: &BaseType) -> (String, bool) {
    match base {
        BaseType::Named(name) => (name.to_string(), false),
        BaseType::List(inner) => (named(&inner.base).0, true),
    }
}

impl SchemaShape {
    /// The shape of the schema whose SDL is `sdl`.
    pub fn of_sdl(sdl: &str) -> SchemaShape {
        let mut objects = HashMap::new();
        let Ok(document) = async_graphql::parser::parse_schema(sdl) else {
            return SchemaShape::default();
        };
        for definition in document.definitions {
            let TypeSystemDefinition::Type(ty) = definition else {
                continue;
            };
            let fields = match &ty.node.kind {
                TypeKind::Object(object) => &object.fields,
                TypeKind::Interface(interface) => &interface.fields,
                _ => continue,
            };
            let fields = fields
                .iter()
                .map(|f| {
                    let (ty, list) = named(&f.node.ty.node.base);
                    (f.node.name.node.to_string(), FieldShape { ty, list })
                })
                .collect();
            objects.insert(ty.node.name.node.to_string(), fields);
        }
        SchemaShape { objects }
    }

    fn field(&self, parent: &str, name: &str) -> Option<&FieldShape> {
        self.objects.get(parent)?.get(name)
    }

    fn is_object(&self, ty: &str) -> bool {
        self.objects.contains_key(ty)
    }
}

/// An argument's value as a number, variables filled in.
fn number_argument(field: &Field, name: &str, variables: &Variables) -> Option<i64> {
    let value = &field
        .arguments
        .iter()
        .find(|(n, _)| n.node.as_str() == name)?
        .1
        .node;
    let value = value
        .clone()
        .into_const_with(|var| variables.get(&var).cloned().ok_or(()))
        .ok()?;
    match value {
        Value::Number(n) => n.as_i64(),
        _ => None,
    }
}

/// How many items a list field may return: its page size.
fn page(
    parent: &str,
    name: &str,
    field: &Field,
    variables: &Variables,
    inherited: Option<u64>,
) -> u64 {
    let arg = |argument: &str, default: i64, max: i64| {
        number_argument(field, argument, variables)
            .unwrap_or(default)
            .clamp(0, max) as u64
    };
    match (parent, name) {
        ("DownloadJob" | "Process", "documents") => arg("first", 1000, 1000),
        ("Query", "testWebhookDeliveries") => arg("last", 20, 50),
        (_, "edges" | "nodes") if parent.ends_with("Connection") => {
            inherited.unwrap_or(UNBOUNDED_LIST)
        }
        _ => UNBOUNDED_LIST,
    }
}

/// The page size a connection field sets for its `edges` and `nodes`.
fn connection_page(parent: &str, name: &str, field: &Field, variables: &Variables) -> Option<u64> {
    let first = |default: i64, max: i64| {
        Some(
            number_argument(field, "first", variables)
                .unwrap_or(default)
                .clamp(0, max) as u64,
        )
    };
    match (parent, name) {
        ("Query", "jobs") => first(20, 100),
        ("Query", "auditLog") => first(20, 100),
        _ => None,
    }
}

/// Fields that may ask the court source.
fn asks_the_court(parent: &str, field: &str) -> bool {
    matches!(
        (parent, field),
        ("Query", "process") | ("Mutation", "startDownload")
    )
}

/// What a selection set adds up to, for one object it is selected on.
#[derive(Debug, Clone, Copy, Default)]
struct Sum {
    /// Points for one such object.
    points: u64,
    /// Field selections, fragments expanded.
    selections: u64,
    /// Deepest nesting below (introspection not counted).
    depth: usize,
}

impl Sum {
    fn add(&mut self, other: Sum) {
        self.points = self.points.saturating_add(other.points);
        self.selections = self.selections.saturating_add(other.selections);
        self.depth = self.depth.max(other.depth);
    }
}

struct Walk<'a> {
    shape: &'a SchemaShape,
    fragments: &'a HashMap<Name, Positioned<FragmentDefinition>>,
    variables: &'a Variables,
    /// Fragments being expanded (a cycle is a validation error; here it just stops).
    expanding: Vec<Name>,
    /// Fragments already summed, by fragment, type and page size: a fragment spread many
    /// times (or fragments spreading each other twice, forty deep) is summed once each, so
    /// pricing stays linear in the operation's text.
    summed: HashMap<(Name, String, Option<u64>), Sum>,
}

impl Walk<'_> {
    /// The sum of `set` on one object of `parent`; `page_size` is the page size a connection
    /// above set.
    fn set(&mut self, set: &SelectionSet, parent: &str, page_size: Option<u64>) -> Sum {
        let mut sum = Sum::default();
        for selection in &set.items {
            match &selection.node {
                Selection::Field(field) => sum.add(self.field(&field.node, parent, page_size)),
                Selection::FragmentSpread(spread) => {
                    let name = &spread.node.fragment_name.node;
                    let Some(fragment) = self.fragments.get(name) else {
                        continue;
                    };
                    let ty = fragment.node.type_condition.node.on.node.to_string();
                    let key = (name.clone(), ty.clone(), page_size);
                    if let Some(known) = self.summed.get(&key) {
                        sum.add(*known);
                        continue;
                    }
                    if self.expanding.contains(name) {
                        continue;
                    }
                    self.expanding.push(name.clone());
                    let inner = self.set(&fragment.node.selection_set.node, &ty, page_size);
                    self.expanding.pop();
                    self.summed.insert(key, inner);
                    sum.add(inner);
                }
                Selection::InlineFragment(inline) => {
                    let ty = inline
                        .node
                        .type_condition
                        .as_ref()
                        .map_or_else(|| parent.to_string(), |c| c.node.on.node.to_string());
                    sum.add(self.set(&inline.node.selection_set.node, &ty, page_size));
                }
            }
        }
        sum
    }

    /// The sum of one field selected on one object of `parent`.
    fn field(&mut self, field: &Field, parent: &str, page_size: Option<u64>) -> Sum {
        let name = field.name.node.as_str();
        let shape = self.shape.field(parent, name).cloned();
        let Some(shape) = shape.filter(|_| !name.starts_with("__")) else {
            // Introspection (or a field validation will refuse): no points, no depth, but its
            // selections count.
            let below = self.set(&field.selection_set.node, "", None);
            return Sum {
                points: 0,
                selections: below.selections.saturating_add(1),
                depth: 0,
            };
        };
        let mut own = 0u64;
        if parent == "Mutation" {
            own += MUTATION;
        }
        if asks_the_court(parent, name) {
            own += COURT;
        }
        if !self.shape.is_object(&shape.ty) {
            return Sum {
                points: own,
                selections: 1,
                depth: 1,
            };
        }
        let items = if shape.list {
            page(parent, name, field, self.variables, page_size)
        } else {
            1
        };
        let below_page = connection_page(parent, name, field, self.variables).or(page_size);
        let below = self.set(&field.selection_set.node, &shape.ty, below_page);
        // Each of the field's objects, and what is selected on each.
        let per_object = below.points.saturating_add(1);
        Sum {
            points: own.saturating_add(items.saturating_mul(per_object)),
            selections: below.selections.saturating_add(1),
            depth: below.depth + 1,
        }
    }
}

/// The cost of the operation `operation_name` of `document` (the only one, when unnamed),
/// with `variables`. An operation that cannot be found costs nothing here: validation will
/// refuse it before anything runs.
pub fn cost(
    shape: &SchemaShape,
    document: &ExecutableDocument,
    operation_name: Option<&str>,
    variables: &Variables,
) -> Cost {
    let operation = match (&document.operations, operation_name) {
        (DocumentOperations::Single(op), _) => Some(op),
        (DocumentOperations::Multiple(ops), Some(name)) => ops.get(name),
        (DocumentOperations::Multiple(ops), None) if ops.len() == 1 => ops.values().next(),
        _ => None,
    };
    let Some(operation) = operation else {
        return Cost::default();
    };
    let root = match operation.node.ty {
        async_graphql::parser::types::OperationType::Query => "Query",
        async_graphql::parser::types::OperationType::Mutation => "Mutation",
        async_graphql::parser::types::OperationType::Subscription => "Subscription",
    };
    let mut walk = Walk {
        shape,
        fragments: &document.fragments,
        variables,
        expanding: Vec::new(),
        summed: HashMap::new(),
    };
    let sum = walk.set(&operation.node.selection_set.node, root, None);
    Cost {
        points: sum.points,
        depth: sum.depth,
        selections: usize::try_from(sum.selections).unwrap_or(usize::MAX),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shape() -> SchemaShape {
        SchemaShape::of_sdl(&crate::graphql::sdl())
    }

    fn of(query: &str, variables: serde_json::Value) -> Cost {
        let document = async_graphql::parser::parse_query(query).unwrap();
        cost(&shape(), &document, None, &Variables::from_json(variables))
    }

    #[test]
    fn objects_are_counted_and_lists_at_their_page_size() {
        // The job, and its 1,000 documents (scalars cost nothing).
        let job = "query($id: ID!) { job(id: $id) { status documents { name downloadUrl } } }";
        assert_eq!(of(job, serde_json::json!({"id": "x"})).points, 1 + 1000);
        let paged = "{ job(id: \"x\") { documents(first: 10) { name } } }";
        assert_eq!(of(paged, serde_json::json!({})).points, 1 + 10);
        let by_variable = "query($n: Int) { job(id: \"x\") { documents(first: $n) { name } } }";
        assert_eq!(of(by_variable, serde_json::json!({"n": 5})).points, 1 + 5);
        // A connection: itself, then its page of edges and their nodes.
        let jobs = "{ jobs(first: 50) { edges { node { id process { number } } } } }";
        assert_eq!(of(jobs, serde_json::json!({})).points, 1 + 50 + 50 + 50);
        assert_eq!(
            of("{ jobs { nodes { id } } }", serde_json::json!({})).points,
            1 + 20
        );
    }

    #[test]
    fn the_court_and_mutations_are_weighted() {
        assert_eq!(
            of(
                "{ process(number: \"1\") { number } }",
                serde_json::json!({})
            )
            .points,
            COURT + 1
        );
        let start = "mutation { startDownload(input: {number: \"1\"}) { created job { id } } }";
        // The payload, its job, the mutation and the court.
        assert_eq!(
            of(start, serde_json::json!({})).points,
            2 + MUTATION + COURT
        );
        let cancel = "mutation { cancelJob(id: \"x\") { id } }";
        assert_eq!(of(cancel, serde_json::json!({})).points, 1 + MUTATION);
    }

    #[test]
    fn aliases_and_fragments_count_every_time() {
        let mut query = String::from("{");
        for i in 0..5000 {
            query.push_str(&format!(
                " a{i}: job(id: \"x\") {{ documents {{ downloadUrl }} }}"
            ));
        }
        query.push('}');
        assert_eq!(of(&query, serde_json::json!({})).points, 5000 * 1001);
        let fragments = "query { job(id: \"x\") { ...J } }
            fragment J on DownloadJob { documents { ...D } process { documents { id } } }
            fragment D on Document { id }";
        assert_eq!(
            of(fragments, serde_json::json!({})).points,
            1 + 1000 + 1 + 1000
        );
        // A cycle (refused later by validation) ends.
        let cycle = "{ job(id: \"x\") { ...A } } fragment A on DownloadJob { process { latestJob { ...A } } }";
        assert!(of(cycle, serde_json::json!({})).points > 0);
    }

    #[test]
    fn selections_are_counted_and_a_fragment_bomb_is_not_expanded() {
        let mut query = String::from("{ job(id: \"x\") {");
        for i in 0..3000 {
            query.push_str(&format!(" s{i}: status"));
        }
        query.push_str(" } }");
        assert!(of(&query, serde_json::json!({})).selections > MAX_SELECTIONS);
        // Forty fragments, each spreading the next twice: 2^40 fields if expanded.
        let mut bomb = String::from("{ job(id: \"x\") { ...F0 } }");
        for i in 0..40 {
            bomb.push_str(&format!(
                " fragment F{i} on DownloadJob {{ a: process {{ number }} ...F{} ...F{} }}",
                i + 1,
                i + 1
            ));
        }
        bomb.push_str(" fragment F40 on DownloadJob { status }");
        let started = std::time::Instant::now();
        let cost = of(&bomb, serde_json::json!({}));
        assert!(cost.selections > MAX_SELECTIONS);
        assert!(
            started.elapsed() < std::time::Duration::from_secs(5),
            "expanded"
        );
        assert_eq!(
            of("{ viewer { tenant scopes } }", serde_json::json!({})).selections,
            3
        );
    }

    #[test]
    fn depth_is_the_deepest_field() {
        let deep = "{ job(id: \"x\") { process { latestJob { process { number } } } } }";
        assert_eq!(of(deep, serde_json::json!({})).depth, 5);
        assert_eq!(
            of("{ __schema { types { name } } }", serde_json::json!({})).depth,
            0
        );
    }
}
