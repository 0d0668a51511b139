"""The exporter's resolution of CloudFormation intrinsics to local stand-ins (pure, no synth)."""

from __future__ import annotations

import json

import pytest

from stacks.export_pipeline_definition import DefinitionExportError, Resolver, export_from_template

TEMPLATE = {
    "Mappings": {"Images": {"eu-west-1": {"training": "123.dkr.ecr.eu-west-1.amazonaws.com/pytorch:1"}}},
    "Resources": {
        "Bucket": {"Type": "AWS::S3::Bucket"},
        "Topic": {"Type": "AWS::SNS::Topic"},
        "Gate": {
            "Type": "AWS::Lambda::Function",
            "Properties": {
                "Handler": "functions.pipeline.gate.handler",
                "Environment": {"Variables": {"SHIPML_ARTIFACT_BUCKET": {"Ref": "Bucket"}}},
            },
        },
        "Machine": {
            "Type": "AWS::StepFunctions::StateMachine",
            "Properties": {
                "DefinitionString": {
                    "Fn::Join": [
                        "",
                        [
                            '{"StartAt":"Gate","States":{"Gate":{"Type":"Task","Resource":"arn:',
                            {"Ref": "AWS::Partition"},
                            ':states:::lambda:invoke","Parameters":{"FunctionName":"',
                            {"Fn::GetAtt": ["Gate", "Arn"]},
                            '","Image":"',
                            {"Fn::FindInMap": ["Images", {"Ref": "AWS::Region"}, "training"]},
                            '","Topic":"',
                            {"Ref": "Topic"},
                            '","Assets":"',
                            {"Fn::Sub": "cdk-assets-${AWS::AccountId}-${AWS::Region}"},
                            '"},"End":true}}}',
                        ],
                    ]
                }
            },
        },
    },
}


def test_references_become_local_stand_ins_and_functions_are_listed() -> None:
    document = export_from_template(TEMPLATE)

    parameters = document["definition"]["States"]["Gate"]["Parameters"]
    arn = "arn:aws:lambda:eu-west-1:000000000000:function:Gate"
    assert parameters == {
        "FunctionName": arn,
        "Image": "123.dkr.ecr.eu-west-1.amazonaws.com/pytorch:1",
        "Topic": "arn:aws:sns:eu-west-1:000000000000:Topic",
        "Assets": "cdk-assets-000000000000-eu-west-1",
    }
    assert document["definition"]["States"]["Gate"]["Resource"] == "arn:aws:states:::lambda:invoke"
    assert document["functions"][arn]["handler"] == "functions.pipeline.gate.handler"
    assert document["stand_ins"]["artifact_bucket"] == "local-bucket"
    assert document["functions"][arn]["environment"] == {"SHIPML_ARTIFACT_BUCKET": "local-bucket"}


def test_an_intrinsic_without_a_stand_in_is_refused() -> None:
    with pytest.raises(DefinitionExportError, match="Fn::ImportValue"):
        Resolver(TEMPLATE).resolve({"Fn::ImportValue": "Other-Stack-Output"})
    with pytest.raises(DefinitionExportError, match="neither a resource"):
        Resolver(TEMPLATE).resolve({"Ref": "Nothing"})


def test_exactly_one_state_machine_is_expected() -> None:
    template = json.loads(json.dumps(TEMPLATE))
    del template["Resources"]["Machine"]

    with pytest.raises(DefinitionExportError, match="found 0"):
        export_from_template(template)
