//! One port, three protocols: gRPC, gRPC-Web and REST, plus reflection and
//! health.

use meshrelease::pb::asm::v2 as pb;
use prost::Message as _;
use tokio_stream::StreamExt as _;
use tonic_health::pb::HealthCheckRequest;
use tonic_health::pb::health_check_response::ServingStatus;
use tonic_health::pb::health_client::HealthClient;

use crate::helpers::*;

#[tokio::test]
async fn reflection_lists_the_service_on_v1_and_v1alpha() {
    let app = spawn_app().await;

    use tonic_reflection::pb::v1;
    let mut client = v1::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = v1::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(v1::server_reflection_request::MessageRequest::ListServices(
            String::new(),
        )),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let Some(v1::server_reflection_response::MessageResponse::ListServicesResponse(list)) =
        stream.next().await.unwrap().unwrap().message_response
    else {
        panic!("not a service list");
    };
    let names: Vec<String> = list.service.into_iter().map(|s| s.name).collect();
    assert!(
        names.contains(&"asm.v2.ReleaseService".to_owned()),
        "{names:?}"
    );
    assert!(
        names.contains(&"grpc.health.v1.Health".to_owned()),
        "{names:?}"
    );

    use tonic_reflection::pb::v1alpha;
    let mut client =
        v1alpha::server_reflection_client::ServerReflectionClient::new(app.channel().await);
    let request = v1alpha::ServerReflectionRequest {
        host: String::new(),
        message_request: Some(
            v1alpha::server_reflection_request::MessageRequest::FileContainingSymbol(
                "asm.v2.ReleaseService".into(),
            ),
        ),
    };
    let mut stream = client
        .server_reflection_info(tokio_stream::iter([request]))
        .await
        .unwrap()
        .into_inner();
    let response = stream.next().await.unwrap().unwrap().message_response;
    assert!(
        matches!(response, Some(v1alpha::server_reflection_response::MessageResponse::FileDescriptorResponse(ref f)) if !f.file_descriptor_proto.is_empty()),
        "{response:?}"
    );
}

#[tokio::test]
async fn grpc_health_reports_serving() {
    let app = spawn_app().await;
    let mut health = HealthClient::new(app.channel().await);
    for service in ["", "asm.v2.ReleaseService"] {
        let status = health
            .check(HealthCheckRequest {
                service: service.into(),
            })
            .await
            .unwrap()
            .into_inner()
            .status;
        assert_eq!(status, ServingStatus::Serving as i32, "{service:?}");
    }
}

fn grpc_web_frame(message: &impl prost::Message) -> Vec<u8> {
    let payload = message.encode_to_vec();
    let mut frame = vec![0u8];
    frame.extend_from_slice(&(payload.len() as u32).to_be_bytes());
    frame.extend_from_slice(&payload);
    frame
}

#[tokio::test]
async fn grpc_web_over_http1_creates_a_release() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let response = client
        .post(format!("{}/asm.v2.ReleaseService/CreateRelease", app.base))
        .header("Content-Type", "application/grpc-web+proto")
        .header("X-Auth-Token", TOKEN)
        .body(grpc_web_frame(&grpc_request("web-canary", "reviews")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.status(), 200);
    assert!(
        response.headers()["content-type"]
            .to_str()
            .unwrap()
            .starts_with("application/grpc-web")
    );
    let body = response.bytes().await.unwrap();
    assert_eq!(body[0], 0, "first frame is the message");
    let len = u32::from_be_bytes(body[1..5].try_into().unwrap()) as usize;
    let release = pb::Release::decode(&body[5..5 + len]).unwrap();
    assert_eq!(release.metadata.unwrap().name, "web-canary");
    let trailers = String::from_utf8_lossy(&body[5 + len + 5..]);
    assert_eq!(body[5 + len], 0x80, "then the trailers");
    assert!(trailers.contains("grpc-status:0"), "{trailers}");
}

#[tokio::test]
async fn grpc_web_without_a_token_is_unauthenticated() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder().http1_only().build().unwrap();
    let response = client
        .post(format!("{}/asm.v2.ReleaseService/CreateRelease", app.base))
        .header("Content-Type", "application/grpc-web+proto")
        .body(grpc_web_frame(&grpc_request("web-canary", "reviews")))
        .send()
        .await
        .unwrap();
    assert_eq!(response.headers()["grpc-status"], "16");
}

#[tokio::test]
async fn rest_works_over_http2_too() {
    let app = spawn_app().await;
    let client = reqwest::Client::builder()
        .http2_prior_knowledge()
        .build()
        .unwrap();
    let response = client
        .post(app.releases_url(MESH, "default"))
        .header("X-Auth-Token", TOKEN)
        .json(&release_body("over-h2", "reviews"))
        .send()
        .await
        .unwrap();
    assert_eq!(response.version(), http::Version::HTTP_2);
    assert_eq!(response.status(), 200);
}

#[tokio::test]
async fn an_unknown_grpc_method_is_unimplemented() {
    let app = spawn_app().await;
    let channel = tonic::transport::Channel::from_shared(app.base.clone())
        .unwrap()
        .connect()
        .await
        .unwrap();
    let mut health = HealthClient::new(channel.clone());
    health
        .check(HealthCheckRequest {
            service: String::new(),
        })
        .await
        .unwrap();
    let mut grpc = tonic::client::Grpc::new(channel);
    grpc.ready().await.unwrap();
    let path = http::uri::PathAndQuery::from_static("/asm.v2.ReleaseService/Nope");
    let err = grpc
        .unary::<HealthCheckRequest, HealthCheckRequest, _>(
            authed(HealthCheckRequest {
                service: String::new(),
            }),
            path,
            tonic_prost::ProstCodec::default(),
        )
        .await
        .unwrap_err();
    assert_eq!(err.code(), tonic::Code::Unimplemented);
}
