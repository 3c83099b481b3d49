"""emberd --tcp serves only mutual TLS (issue 21, item 3): a client with a certificate from the
operator's CA gets in; one with no certificate, one from another CA, or plaintext does not; and
--tcp without the TLS files is refused at start-up. Throwaway certificates from `openssl`;
fake_vmm.py as the VMM (no KVM needed)."""
import os
import shutil
import socket
import subprocess
import tempfile
import unittest

import grpc

import ember_unittest
import ember_client as ec
from ember_client import api, api_grpc

FAKE_VMM = os.path.join(os.path.dirname(os.path.abspath(__file__)), "fake_vmm.py")
EMBERD = os.path.join(ec.BUILD_DIR, "bin", "emberd")


def openssl(*args):
    subprocess.run(["openssl", *args], check=True, capture_output=True)


class Pki:
    """A CA and certificates it signs, as PEM files in `dir`."""

    def __init__(self, dir, name):
        self.dir = dir
        self.name = name
        self.ca_key, self.ca = self.path("ca.key"), self.path("ca.pem")
        openssl("req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                "-nodes", "-keyout", self.ca_key, "-out", self.ca, "-days", "1",
                "-subj", f"/CN={name} test CA")

    def path(self, file):
        return os.path.join(self.dir, f"{self.name}-{file}")

    def issue(self, cn, extensions):
        """(key, cert) for `cn`, signed by this CA."""
        key, csr, cert, ext = (self.path(f"{cn}.{s}") for s in ("key", "csr", "pem", "ext"))
        openssl("req", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
                "-keyout", key, "-out", csr, "-subj", f"/CN={cn}")
        with open(ext, "w") as f:
            f.write(extensions + "\n")
        openssl("x509", "-req", "-in", csr, "-CA", self.ca, "-CAkey", self.ca_key,
                "-CAcreateserial", "-out", cert, "-days", "1", "-extfile", ext)
        return key, cert


def read(path):
    with open(path, "rb") as f:
        return f.read()


def free_port():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class TcpMutualTlsTest(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.dir = tempfile.mkdtemp(prefix="ember-e2e-tls-")
        cls.pki = Pki(cls.dir, "operator")
        cls.server_key, cls.server_cert = cls.pki.issue(
            "emberd", "subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth")
        cls.client_key, cls.client_cert = cls.pki.issue("client",
                                                        "extendedKeyUsage=clientAuth")
        cls.stranger_key, cls.stranger_cert = Pki(cls.dir, "stranger").issue(
            "client", "extendedKeyUsage=clientAuth")

    @classmethod
    def tearDownClass(cls):
        shutil.rmtree(cls.dir, ignore_errors=True)

    def setUp(self):
        self.address = f"127.0.0.1:{free_port()}"
        self.emberd = ec.Emberd(extra_args=[
            "--no-jail", "--vmm", FAKE_VMM, "--tcp", self.address, "--tls-cert", self.server_cert,
            "--tls-key", self.server_key, "--tls-client-ca", self.pki.ca])
        self.addCleanup(self.emberd.close)

    def list_over_tcp(self, credentials):
        """The status code of a List call over TCP with these channel credentials."""
        with grpc.secure_channel(self.address, credentials) as channel:
            try:
                api_grpc.EmberStub(channel).List(api.ListRequest(), timeout=10)
            except grpc.RpcError as error:
                return error.code()
        return grpc.StatusCode.OK

    def test_a_client_with_a_certificate_from_the_operators_ca_gets_in(self):
        self.emberd.stub.Create(api.CreateRequest(vm_id="vm1", config=ec.config()), timeout=30)
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(self.pki.ca), private_key=read(self.client_key),
            certificate_chain=read(self.client_cert))
        with grpc.secure_channel(self.address, credentials) as channel:
            vms = api_grpc.EmberStub(channel).List(api.ListRequest(), timeout=10).vms
        self.assertEqual([vm.vm_id for vm in vms], ["vm1"])

    def test_a_client_without_a_certificate_is_refused(self):
        credentials = grpc.ssl_channel_credentials(root_certificates=read(self.pki.ca))
        self.assertEqual(self.list_over_tcp(credentials), grpc.StatusCode.UNAVAILABLE)

    def test_a_client_with_a_certificate_from_another_ca_is_refused(self):
        credentials = grpc.ssl_channel_credentials(
            root_certificates=read(self.pki.ca), private_key=read(self.stranger_key),
            certificate_chain=read(self.stranger_cert))
        self.assertEqual(self.list_over_tcp(credentials), grpc.StatusCode.UNAVAILABLE)

    def test_a_plaintext_client_is_refused(self):
        with grpc.insecure_channel(self.address) as channel:
            with self.assertRaises(grpc.RpcError) as raised:
                api_grpc.EmberStub(channel).List(api.ListRequest(), timeout=10)
        self.assertEqual(raised.exception.code(), grpc.StatusCode.UNAVAILABLE)


class TcpStartUpTest(unittest.TestCase):
    def start(self, *flags):
        scratch = tempfile.mkdtemp(prefix="ember-e2e-tls-")
        self.addCleanup(shutil.rmtree, scratch, True)
        return subprocess.run(
            [EMBERD, "--socket", os.path.join(scratch, "emberd.sock"), "--state-dir",
             os.path.join(scratch, "state"), "--vmm", FAKE_VMM, *flags],
            capture_output=True, text=True, timeout=30)

    def test_tcp_without_tls_files_is_refused_at_start_up(self):
        result = self.start("--tcp", f"127.0.0.1:{free_port()}")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("--tcp needs --tls-cert, --tls-key and --tls-client-ca", result.stderr)

    def test_tcp_with_an_unreadable_client_ca_is_refused_at_start_up(self):
        result = self.start("--tcp", f"127.0.0.1:{free_port()}", "--tls-cert", "/nonexistent/c",
                            "--tls-key", "/nonexistent/k", "--tls-client-ca", "/nonexistent/ca")
        self.assertEqual(result.returncode, 2, result.stderr)
        self.assertIn("--tls-cert", result.stderr)


if __name__ == "__main__":
    ember_unittest.main()
