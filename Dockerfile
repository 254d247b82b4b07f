FROM golang:1.26 AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY *.go ./
COPY internal/ ./internal/
COPY web/ ./web/
ARG VERSION=dev
RUN CGO_ENABLED=0 go build -trimpath -ldflags="-s -w -X main.version=${VERSION}" -o /out/echohub .

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/echohub /echohub
USER 65532:65532
ENV ECHOHUB_LISTEN=0.0.0.0:7000
ENV ECHOHUB_METRICS_LISTEN=0.0.0.0:9090
ENV ECHOHUB_WEB_LISTEN=0.0.0.0:8080
EXPOSE 7000 9090 8080
HEALTHCHECK --interval=10s --timeout=3s CMD ["/echohub", "healthcheck"]
ENTRYPOINT ["/echohub"]
CMD ["serve"]
