//! The publication a reader streams: checked at every start, because a
//! publication that lacks a table streams incomplete transactions (orders
//! without their lines) without any error.

use anyhow::{Context as _, bail};
use sqlx::PgPool;

use super::slot::{ignore_duplicate, valid_identifier};

/// Creates the publication (inserts only) on exactly `tables`, or repairs an
/// existing one that covers other tables or does not publish inserts.
/// A `FOR ALL TABLES` publication cannot be narrowed: that is refused.
pub async fn ensure(pool: &PgPool, name: &str, tables: &[&str]) -> anyhow::Result<()> {
    if !valid_identifier(name) || !tables.iter().all(|t| valid_identifier(t)) {
        bail!("publication {name:?} or its tables {tables:?} are not plain identifiers");
    }
    let schema: String = sqlx::query_scalar!(r#"SELECT current_schema() AS "schema!""#)
        .fetch_one(pool)
        .await?;
    let mut wanted: Vec<String> = tables.iter().map(|t| format!("{schema}.{t}")).collect();
    wanted.sort_unstable();
    let existing = sqlx::query!(
        r#"SELECT p.puballtables AS "all_tables!", p.pubinsert AS "inserts!",
                  COALESCE(array_agg(t.schemaname || '.' || t.tablename ORDER BY t.schemaname, t.tablename)
                               FILTER (WHERE t.tablename IS NOT NULL),
                           '{}') AS "tables!: Vec<String>"
           FROM pg_publication p
           LEFT JOIN pg_publication_tables t ON t.pubname = p.pubname
           WHERE p.pubname = $1
           GROUP BY p.puballtables, p.pubinsert"#,
        name
    )
    .fetch_optional(pool)
    .await
    .with_context(|| format!("reading publication {name}"))?;
    let Some(existing) = existing else {
        let create = format!(
            "CREATE PUBLICATION {name} FOR TABLE {} WITH (publish = 'insert')",
            tables.join(", ")
        );
        return ignore_duplicate(sqlx::raw_sql(&create).execute(pool).await.map(drop))
            .with_context(|| format!("creating publication {name}"));
    };
    if existing.all_tables {
        bail!(
            "publication {name} is FOR ALL TABLES; change capture needs exactly {wanted:?}. \
             Drop it (DROP PUBLICATION {name}) and start order-service again to recreate it"
        );
    }
    let mut actual = existing.tables;
    actual.sort_unstable();
    if actual != wanted {
        tracing::warn!(
            publication = name,
            ?actual,
            ?wanted,
            "the publication covers other tables than change capture needs: setting them. \
             Transactions written before this fix are decoded with the old table list; \
             rows that cannot form an event are dead-lettered"
        );
        let alter = format!("ALTER PUBLICATION {name} SET TABLE {}", tables.join(", "));
        sqlx::raw_sql(&alter)
            .execute(pool)
            .await
            .with_context(|| format!("setting the tables of publication {name}"))?;
    }
    if !existing.inserts {
        tracing::warn!(
            publication = name,
            "the publication does not publish inserts: setting publish = 'insert'"
        );
        let alter = format!("ALTER PUBLICATION {name} SET (publish = 'insert')");
        sqlx::raw_sql(&alter)
            .execute(pool)
            .await
            .with_context(|| format!("setting what publication {name} publishes"))?;
    }
    Ok(())
}
