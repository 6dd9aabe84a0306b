//! Storage tests run twice: on SQLite and on the PostgreSQL server of this machine.

/// For each named `async fn(Store)` of the calling module, a test on a fresh SQLite file
/// (`sqlite::name`) and one on a fresh PostgreSQL database (`postgres::name`). The calling module
/// brings `sqlite_url` and `postgres_url` into scope.
macro_rules! on_both_stores {
    ($($name:ident),+ $(,)?) => {
        mod sqlite {
            $(#[tokio::test] async fn $name() { super::$name(chatwarden::store::Store::connect(&super::sqlite_url()).await.unwrap()).await })+
        }
        mod postgres {
            $(#[tokio::test] async fn $name() { super::$name(chatwarden::store::Store::connect(&super::postgres_url().await).await.unwrap()).await })+
        }
    };
}
