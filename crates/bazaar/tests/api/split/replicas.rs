//! Two processes of every module behind one gateway: the peers are lists, the gateway
//! and the RPC clients balance across them, and the background work (NATS consumers,
//! outbox relays, the reservation sweeper, saga recovery) is shared without doing
//! anything twice, also when one replica of each module is killed in turn.

use super::*;

const REPLICAS: usize = 2;

/// How many requests the module's replica `replica` served (its RED counter): the
/// gateway and the RPC clients spread work over both.
async fn served(cluster: &Cluster, name: &str, replica: usize) -> f64 {
    let port = cluster
        .services
        .iter()
        .find(|s| s.name == name && s.replica == replica)
        .unwrap()
        .port;
    let text = crate::helpers::client()
        .get(format!("http://127.0.0.1:{port}/metrics"))
        .bearer_auth(crate::helpers::METRICS_TOKEN)
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    text.lines()
        .filter(|line| {
            line.starts_with("http_requests_total{")
                || line.starts_with("rpc_server_requests_total{")
        })
        .filter_map(|line| line.rsplit(' ').next()?.parse::<f64>().ok())
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_oversell_and_idempotency_across_two_of_each_module() {
    let Some(backends) = backends("replicas_oversell_and_idempotency_across_two_of_each_module")
    else {
        return;
    };
    let cluster = Cluster::start_replicated(&backends, &backends.nats, &[], REPLICAS).await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let products = api.products_exactly(2).await;

    // 40 buyers at once for 20 units: exactly 20 confirmed, 20 out of stock.
    let scarce = id_of(&products[0]);
    api.set_stock(&admin, &scarce, 20).await;
    let tokens = api.register_many("replica-rush", 40).await;
    let body = order_body(&[(&scarce, 1)], "tok_visa");
    let placed = join_all(tokens.iter().map(|token| api.place_ok(token, &body))).await;
    let mut confirmed: Vec<Value> = Vec::new();
    let mut failed_ids = Vec::new();
    for (token, (_, order)) in tokens.iter().zip(&placed) {
        let order = api.wait_until_terminal(token, &id_of(order)).await;
        match (order["status"].as_str(), order["failure_reason"].as_str()) {
            (Some("confirmed"), None) => confirmed.push(order),
            (Some("failed"), Some("out_of_stock")) => failed_ids.push(id_of(&order)),
            _ => panic!("unexpected outcome: {order}"),
        }
    }
    assert_eq!(
        (confirmed.len(), failed_ids.len()),
        (20, 20),
        "confirmed and out of stock"
    );
    eventually("the scarce product sold out", || async {
        match api.stock(&scarce).await {
            0 => Ok(()),
            stock => Err(format!("stock {stock}")),
        }
    })
    .await;

    // One Idempotency-Key sent 10 times at once (the gateway spreads them over both
    // orders replicas): one order, one charge.
    let (idem, _) = api.register("replica-idem@example.com").await;
    let (other, other_price) = (
        id_of(&products[1]),
        products[1]["price_cents"].as_i64().unwrap(),
    );
    let body = order_body(&[(&other, 1)], "tok_visa");
    let responses = join_all((0..10).map(|_| async {
        let response = api
            .try_place_order(&idem, &body, Some("replica-checkout-1"))
            .await
            .unwrap();
        let status = response.status().as_u16();
        (status, response.text().await.unwrap())
    }))
    .await;
    let accepted = accepted_repeats(&responses);
    assert!(!accepted.is_empty(), "nothing accepted: {responses:?}");
    let id = id_of(&accepted[0].1);
    for (_, order) in &accepted {
        assert_eq!(
            id_of(order),
            id,
            "repeats name different orders: {responses:?}"
        );
    }
    let mine = api.my_orders_one_page(&idem).await;
    assert_eq!(mine.len(), 1, "{mine:?}");
    let order = api.wait_until_terminal(&idem, &id).await;
    assert_eq!(order["status"], "confirmed", "{order}");
    assert_eq!(
        cluster.ledger().await.get(&id),
        Some(&(1, other_price, 0)),
        "one charge for the idempotent order"
    );
    confirmed.push(order);

    // Each event handled once by one of the two consumers: one email per outcome,
    // each confirmation counted once, and the stores pass the audit.
    let confirmed_ids: Vec<String> = confirmed.iter().map(id_of).collect();
    wait_for_sales(&api, &admin, PATIENCE, confirmed.len(), revenue(&confirmed)).await;
    eventually("one email per order outcome", || async {
        api.emails_settled(&admin, &confirmed_ids, &failed_ids)
            .await
    })
    .await;
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");

    // Both replicas of the modules on the checkout path did some of the work.
    for module in ["identity", "catalog", "orders", "payments"] {
        let counts = [
            served(&cluster, module, 0).await,
            served(&cluster, module, 1).await,
        ];
        eprintln!("{module}: requests served per replica {counts:?}");
        assert!(counts.iter().all(|&n| n > 0.0), "{module}: {counts:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn replicas_kill_one_of_each_module_in_turn_during_checkouts() {
    const BUYERS: usize = 4;
    /// Attempts per buyer at most: the stream is bounded even if the stop never comes.
    const ATTEMPTS: usize = 150;
    /// Modules killed in turn (one replica each): every module but the gateway.
    const KILLED: [&str; 7] = [
        "orders",
        "catalog",
        "payments",
        "notifications",
        "analytics",
        "cart",
        "identity",
    ];
    let Some(backends) = backends("replicas_kill_one_of_each_module_in_turn_during_checkouts")
    else {
        return;
    };
    let mut cluster = Cluster::start_replicated(
        &backends,
        &backends.nats,
        &[("payments", "BAZAAR_PAYMENT_PROVIDER_LATENCY_MS", "20")],
        REPLICAS,
    )
    .await;
    let api = cluster.api.clone();
    let admin = api.admin_token().await;
    let product = id_of(&api.products_exactly(1).await[0]);
    api.set_stock(&admin, &product, 10_000).await;
    let tokens = api.register_many("replica-crash", BUYERS).await;

    let stream = Arc::new(Stream::default());
    let clients = stream.checkouts(&api, &tokens, &product, ATTEMPTS);
    let accepted_at_least = |n| stream.accepted_at_least(n);

    eventually("4 checkouts accepted", accepted_at_least(4)).await;
    for module in KILLED {
        cluster.kill_replica(module, 0).await;
        // The other replica carries on alone.
        eventually(
            &format!("3 more checkouts accepted with one {module} killed"),
            accepted_at_least(stream.accepted.load(Ordering::SeqCst) + 3),
        )
        .await;
        cluster.start_replica(module, 0).await;
    }
    stream.stop.store(true, Ordering::SeqCst);
    for client in clients {
        client.await.unwrap();
    }
    eprintln!(
        "one replica of each module killed in turn: {} checkouts accepted, {} errors \
         absorbed: {:?}",
        stream.accepted.load(Ordering::SeqCst),
        stream.errors.load(Ordering::SeqCst),
        stream.seen.lock().unwrap()
    );

    // Every order that exists finishes; none is charged twice.
    let (orders, _) = cluster
        .settled_orders(&api, &tokens, stream.accepted.load(Ordering::SeqCst))
        .await;
    let confirmed: Vec<Value> = orders
        .iter()
        .filter(|o| o["status"] == "confirmed")
        .cloned()
        .collect();
    let failed: Vec<String> = orders
        .iter()
        .filter(|o| o["status"] == "failed")
        .map(id_of)
        .collect();
    let confirmed_ids: Vec<String> = confirmed.iter().map(id_of).collect();
    // A message a killed consumer held unacknowledged comes back after the ack wait
    // (30 s): patience beyond that.
    wait_for_sales(
        &api,
        &admin,
        REDELIVERY,
        confirmed.len(),
        revenue(&confirmed),
    )
    .await;
    eventually_within("one email per order outcome", REDELIVERY, || async {
        api.emails_settled(&admin, &confirmed_ids, &failed).await
    })
    .await;
    cluster.assert_audit_clean().await;
    assert_eq!(api.dead_letters(&admin).await, json!([]), "dead letters");
}
